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

/// A byte count in binary units for people: `512 B`, `4.0 KiB`, `252.0 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Tenths of the unit, in integers, so the text is the same everywhere.
    let mut unit = 0;
    let mut scaled = u128::from(bytes) * 10 / 1024;
    while scaled >= 10 * 1024 && unit + 1 < UNITS.len() {
        scaled /= 1024;
        unit += 1;
    }
    format!("{}.{} {}", scaled / 10, scaled % 10, UNITS[unit])
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

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(270_553_174_016), "251.9 GiB");
        assert_eq!(format_bytes(u64::MAX), "15.9 EiB");
    }
}
