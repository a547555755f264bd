//! Sizes in bytes as people write them: `67108864`, `64MiB`, `1GiB`,
//! `500MB`, `32 KiB`. Binary units (KiB, MiB, GiB, TiB) count by 1024,
//! decimal ones (kB/KB, MB, GB, TB) by 1000, `B` or no unit is bytes; the
//! number is whole (no fractions) and the unit's case is as written here
//! or all lower case.

use super::diag::shown;

/// Parses a size; refuses zero, fractions, unknown units and overflow.
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    if num.is_empty() {
        return Err(format!(
            "invalid size {}: expected a number of bytes, optionally with a unit such as MiB",
            shown(input)
        ));
    }
    let factor: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "KiB" | "kib" => 1 << 10,
        "MiB" | "mib" => 1 << 20,
        "GiB" | "gib" => 1 << 30,
        "TiB" | "tib" => 1 << 40,
        "kB" | "KB" | "kb" => 1_000,
        "MB" | "mb" => 1_000_000,
        "GB" | "gb" => 1_000_000_000,
        "TB" | "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "invalid size {}: unknown unit {} (B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)",
                shown(input),
                shown(other)
            ));
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {}: too large", shown(input)))?;
    let bytes = n
        .checked_mul(factor)
        .ok_or_else(|| format!("invalid size {}: too large", shown(input)))?;
    if bytes == 0 {
        return Err(format!(
            "invalid size {}: must be more than zero",
            shown(input)
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_read_with_binary_and_decimal_units() {
        assert_eq!(parse_size("67108864").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size(" 32 KiB ").unwrap(), 32 << 10);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1gib").unwrap(), 1 << 30);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("2kB").unwrap(), 2_000);
        assert_eq!(parse_size("7B").unwrap(), 7);
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        assert!(parse_size("").unwrap_err().contains("expected a number"));
        assert!(parse_size("MiB").unwrap_err().contains("expected a number"));
        assert!(parse_size("1.5GiB").unwrap_err().contains("unknown unit"));
        assert!(
            parse_size("3 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_size("0").unwrap_err().contains("more than zero"));
        assert!(parse_size("-1").unwrap_err().contains("expected a number"));
        assert!(
            parse_size("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_size("20000000TiB").unwrap_err().contains("too large"));
    }
}
