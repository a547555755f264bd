//! `[ipfs] storage_max`: an optional size in bytes, written as a number
//! or with a unit (`100MiB`, `1GiB`, `500MB`; the manifest's
//! [`parse_size`]).
//!
//! This module owns how the key is read and written, nothing else.

use toml::Value;

use super::codec::{Codec, describe};
use crate::manifest::size::parse_size;

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
            Value::String(s) if s.trim().is_empty() || s.trim() == "0" => 0,
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
