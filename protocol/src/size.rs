//! Byte sizes as operators write them: `4096`, `64MiB`, `500GiB`, `2T`, `100 MB`.

/// Why a size did not parse; the message names the text and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The unit is none of the known ones.
    #[error("size {0:?} has an unknown unit; use e.g. 64MiB, 500GiB, 2TB or a byte count")]
    Unit(String),
    /// The number is missing or not a whole number.
    #[error("size {0:?} is not a whole number with an optional unit")]
    Number(String),
    /// The size does not fit in 64 bits.
    #[error("size {0:?} is too large")]
    TooLarge(String),
}

/// Parses a size into bytes. `KiB`/`MiB`/`GiB`/`TiB` are powers of 1024; `K`/`KB`, `M`/`MB`,
/// `G`/`GB`, `T`/`TB` powers of 1000; `B` or no unit is bytes; case and spaces around the unit
/// do not matter.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1 << 40,
        _ => return Err(SizeError::Unit(s.to_string())),
    };
    let n: u64 = num.parse().map_err(|_| SizeError::Number(s.to_string()))?;
    n.checked_mul(mult)
        .ok_or_else(|| SizeError::TooLarge(s.to_string()))
}

/// Binary units from KiB up.
const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// Below this many of a unit a size keeps one decimal (`12.5 GiB`); from it on whole units
/// say enough (`252 GiB`).
const DECIMAL_BELOW_UNITS: u128 = 100;

/// `bytes` for people: `512 B`, `1.5 KiB`, `12.3 GiB`, `252 GiB` (binary units, rounded to
/// nearest, a trailing `.0` left out). Integer arithmetic, so the same number always prints
/// the same.
pub fn format_bytes(bytes: u64) -> String {
    let bytes = u128::from(bytes);
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0usize;
    let mut scale: u128 = 1024;
    while unit + 1 < UNITS.len() && bytes >= scale * 1024 {
        scale *= 1024;
        unit += 1;
    }
    let tenths = (bytes * 10 + scale / 2) / scale;
    if tenths >= DECIMAL_BELOW_UNITS * 10 {
        return format!("{} {}", (bytes + scale / 2) / scale, UNITS[unit]);
    }
    match tenths % 10 {
        0 => format!("{} {}", tenths / 10, UNITS[unit]),
        d => format!("{}.{d} {}", tenths / 10, UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("256mib"), Ok(256 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("100 MB"), Ok(100_000_000));
        assert_eq!(parse_size("3 TB"), Ok(3_000_000_000_000));
        assert_eq!(parse_size(" 7b "), Ok(7));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(matches!(parse_size("12 parsecs"), Err(SizeError::Unit(_))));
        for bad in ["", "MiB", "1.5GiB", "-1MiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_size("99999999999TiB"),
            Err(SizeError::TooLarge(_))
        ));
    }

    /// Sizes read as people write them, in binary units.
    #[test]
    fn human_sizes() {
        let gib = 1u64 << 30;
        for (bytes, want) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            (10 * 1024 * 1024 + 300 * 1024, "10.3 MiB"),
            (gib, "1 GiB"),
            (252 * gib + gib / 3, "252 GiB"),
            (99 * gib + gib * 97 / 100, "100 GiB"),
            (3 << 40, "3 TiB"),
            (u64::MAX, "16 EiB"),
        ] {
            assert_eq!(format_bytes(bytes), want, "{bytes} bytes");
        }
    }
}
