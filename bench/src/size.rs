//! Byte sizes on the command line (`64MiB`, `1GiB`, `4096`) and in figure labels.

/// Parses a size such as `4096`, `64MiB`, `1GiB` or `100 MB` into bytes, with the units of
/// `hamster init --capacity` ([`hamster_protocol::size::parse_size`]). Zero is refused: an
/// empty object measures nothing.
pub fn parse_size(s: &str) -> Result<u64, String> {
    match hamster_protocol::size::parse_size(s) {
        Ok(0) => Err(format!("size {s:?} is zero")),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(e.to_string()),
    }
}

/// The shortest exact binary form of `bytes` for labels: `64MiB`, `4KiB`, `1000B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes / unit);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both unit families and bare byte counts parse; junk, zero and overflow are refused.
    #[test]
    fn parses_binary_and_decimal_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("256mib"), Ok(256 << 20));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("100 MB"), Ok(100_000_000));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size(" 7b "), Ok(7));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("-1MiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    /// Labels use the largest binary unit that divides the size exactly.
    #[test]
    fn formats_exact_binary_units() {
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(4096), "4KiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(parse_size("64MiB").unwrap()), "64MiB");
    }
}
