//! Calendar arithmetic for the wire: Unix milliseconds to and from the ISO 8601 and RFC 1123
//! forms S3 uses. Pure integer math, so every node formats a timestamp identically.

/// Days since 1970-01-01 for a proleptic Gregorian civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn split(ms: u64) -> (i64, u32, u32, u64, u64, u64, u64) {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86400) as i64);
    let rem = secs % 86400;
    (y, mo, d, rem / 3600, (rem % 3600) / 60, rem % 60, ms % 1000)
}

/// Parses an operator's duration, a whole number with one unit: `90s`, `5m`, `1h`, `7d`, into
/// milliseconds. `None` if it does not parse or does not fit.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return None;
    }
    let unit_ms: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 24 * 3_600_000,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(unit_ms)
}

/// `2013-05-24T00:00:00.000Z`, the form of `<LastModified>` and `<CreationDate>` in S3 XML.
pub fn iso8601_ms(ms: u64) -> String {
    let (y, mo, d, h, mi, s, milli) = split(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// `20130524T000000Z`, the SigV4 `x-amz-date` form.
pub fn amz_date(ms: u64) -> String {
    let (y, mo, d, h, mi, s, _) = split(ms);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// Parses `20130524T000000Z` into Unix milliseconds.
pub fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo, d);
    if days < 0 {
        return None;
    }
    Some((days as u64 * 86400 + h as u64 * 3600 + mi as u64 * 60 + se as u64) * 1000)
}

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Fri, 24 May 2013 00:00:00 GMT`, the HTTP date form of `Last-Modified`.
pub fn http_date(ms: u64) -> String {
    let (y, mo, d, h, mi, s, _) = split(ms);
    let wd = WEEKDAYS[((ms / 1000 / 86400) % 7) as usize];
    format!(
        "{wd}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT",
        MONTHS[(mo - 1) as usize]
    )
}

/// Parses an RFC 1123 HTTP date (`Fri, 24 May 2013 00:00:00 GMT`) into Unix milliseconds.
pub fn parse_http_date(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let d: u32 = parts[1].parse().ok()?;
    let mo = MONTHS.iter().position(|m| *m == parts[2])? as u32 + 1;
    let y: i64 = parts[3].parse().ok()?;
    // RFC 1123 years have four digits; a wider one would overflow the day arithmetic below.
    if !(0..=9999).contains(&y) {
        return None;
    }
    let hms: Vec<u64> = parts[4]
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 || hms[0] > 23 || hms[1] > 59 || hms[2] > 60 || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    if days < 0 {
        return None;
    }
    Some((days as u64 * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2]) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_one_unit() {
        assert_eq!(parse_duration_ms("90s"), Some(90_000));
        assert_eq!(parse_duration_ms(" 5m "), Some(300_000));
        assert_eq!(parse_duration_ms("1h"), Some(3_600_000));
        assert_eq!(parse_duration_ms("2d"), Some(172_800_000));
        for bad in [
            "",
            "s",
            "10",
            "10x",
            "1.5h",
            "-1s",
            "1h30m",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
        assert_eq!(parse_duration_ms(&format!("{}d", u64::MAX / 1_000)), None);
    }

    #[test]
    fn round_trips_known_dates() {
        let ms = parse_amz_date("20130524T000000Z").unwrap();
        assert_eq!(ms, 1_369_353_600_000);
        assert_eq!(amz_date(ms), "20130524T000000Z");
        assert_eq!(iso8601_ms(ms + 7), "2013-05-24T00:00:00.007Z");
        assert_eq!(http_date(ms), "Fri, 24 May 2013 00:00:00 GMT");
        assert_eq!(parse_http_date("Fri, 24 May 2013 00:00:00 GMT"), Some(ms));
        assert_eq!(parse_amz_date("2013-05-24"), None);
        assert_eq!(parse_amz_date("20131324T000000Z"), None);
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for z in (-800_000i64..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }
}
