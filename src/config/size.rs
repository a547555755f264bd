//! Byte sizes as a user writes them: `1048576`, `100MiB`, `1GiB`, `500MB`,
//! `4KiB` (binary units are powers of 1024, decimal ones of 1000; `B` or
//! nothing is bytes; case-insensitive). Read by `[ipfs] storage_max` and
//! by `pinfleet add --shard-size`.
//!
//! This module owns the text form of a size and nothing else.

use toml::Value;

use super::codec::{Codec, describe};

/// Units and their multipliers; the longest suffixes first.
const UNITS: [(&str, u64); 11] = [
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("k", 1 << 10),
    ("m", 1 << 20),
    ("b", 1),
];

/// Bytes from `text`: a whole number with an optional unit (`100MiB`,
/// `1 GiB`, `500MB`, `4096`).
///
/// # Errors
///
/// What is wrong with the text, for the user.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let (number, factor) = UNITS
        .iter()
        .find_map(|(unit, f)| lower.strip_suffix(unit).map(|n| (n.trim_end(), *f)))
        .unwrap_or((lower.as_str(), 1));
    let bad = || {
        format!(
            "invalid size {:?}: expected bytes, or a number with a unit such as 100MiB, 1GiB or 500MB",
            crate::manifest::shown(text)
        )
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("size {:?} is too large", crate::manifest::shown(text)))
}

/// An optional size: a whole number of bytes or a size text
/// ([`parse_size`]); `""` or `0` for none. Written as the byte count (a
/// string, so that an environment override reads the same way).
pub(super) struct OptionalSize;

impl Codec for OptionalSize {
    type Field = Option<u64>;

    fn read(value: &Value) -> Result<Option<u64>, String> {
        let n = match value {
            Value::Integer(i) => {
                u64::try_from(*i).map_err(|_| format!("{i} is negative; expected 0 or more"))?
            }
            Value::String(s) if s.trim().is_empty() => 0,
            Value::String(s) => parse_size(s)?,
            other => {
                return Err(format!(
                    "expected a size (bytes, or e.g. \"100MiB\"), found {}",
                    describe(other)
                ));
            }
        };
        Ok((n > 0).then_some(n))
    }

    fn write(field: &Option<u64>) -> Value {
        Value::String(field.map(|n| n.to_string()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_bytes_and_binary_and_decimal_units() {
        assert_eq!(parse_size("4194304"), Ok(4_194_304));
        assert_eq!(parse_size("32MiB"), Ok(32 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1 gib"), Ok(1 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("2k"), Ok(2048));
        for bad in ["", "MiB", "1.5MiB", "-1", "12XB", "0x10"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn storage_max_reads_numbers_and_texts_and_zero_is_none() {
        assert_eq!(OptionalSize::read(&Value::Integer(100)), Ok(Some(100)));
        assert_eq!(
            OptionalSize::read(&Value::String("24MiB".into())),
            Ok(Some(24 << 20))
        );
        assert_eq!(OptionalSize::read(&Value::String(String::new())), Ok(None));
        assert_eq!(OptionalSize::read(&Value::Integer(0)), Ok(None));
        assert!(OptionalSize::read(&Value::Integer(-1)).is_err());
        assert!(OptionalSize::read(&Value::Boolean(true)).is_err());
        let written = OptionalSize::write(&Some(24 << 20));
        assert_eq!(OptionalSize::read(&written), Ok(Some(24 << 20)));
    }

    #[test]
    fn storage_max_is_read_from_the_file_and_from_its_environment_variable() {
        use crate::config::ServiceConfig;
        let file = std::path::Path::new("service.toml");
        let secret = "[cluster]\nsecret = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n";
        let text = format!("{secret}[ipfs]\nstorage_max = \"100MiB\"\n");
        let c = ServiceConfig::from_toml_str(&text, file, &[]).unwrap();
        assert_eq!(c.ipfs.storage_max, Some(100 << 20));
        let env = [("PINFLEET_IPFS_STORAGE_MAX".to_string(), "1GiB".to_string())];
        let c = ServiceConfig::from_toml_str(secret, file, &env).unwrap();
        assert_eq!(c.ipfs.storage_max, Some(1 << 30));
        let c = ServiceConfig::from_toml_str(secret, file, &[]).unwrap();
        assert_eq!(c.ipfs.storage_max, None, "no limit by default");
        let bad = format!("{secret}[ipfs]\nstorage_max = \"lots\"\n");
        let e = ServiceConfig::from_toml_str(&bad, file, &[]).unwrap_err();
        assert!(
            e.problems
                .iter()
                .any(|p| p.starts_with("ipfs.storage_max") && p.contains("invalid size")),
            "{:?}",
            e.problems
        );
    }
}
