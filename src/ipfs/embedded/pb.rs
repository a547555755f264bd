//! The few protobuf wire-format primitives the embedded node needs: varints,
//! length-delimited fields, and a bounds-checked field reader.
//!
//! Hand-written rather than generated: there is no `protoc` on build
//! machines, the messages are tiny (Bitswap's five fields, dag-pb links),
//! and a reader that never allocates or panics on hostile input is short.
//! It must not grow into a general protobuf library.

/// Protobuf wire types used here.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Why bytes are not a valid protobuf message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PbError {
    /// The input ended inside a field.
    #[error("truncated protobuf message")]
    Truncated,
    /// A varint longer than ten bytes.
    #[error("overlong varint")]
    Overlong,
    /// A wire type this reader does not accept (groups).
    #[error("unsupported wire type {0}")]
    WireType(u8),
    /// A field had the wrong wire type or value.
    #[error("invalid field {0}")]
    Field(u32),
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a varint-typed field.
pub(crate) fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, (u64::from(field) << 3) | u64::from(VARINT));
    put_varint(out, v);
}

/// Appends a length-delimited field.
pub(crate) fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | u64::from(LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads a varint from the start of `buf`: the value and its length.
pub(crate) fn get_varint(buf: &[u8]) -> Result<(u64, usize), PbError> {
    let mut v = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    if buf.len() >= 10 {
        Err(PbError::Overlong)
    } else {
        Err(PbError::Truncated)
    }
}

/// One field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// A varint.
    Varint(u64),
    /// Length-delimited bytes (bytes, strings, sub-messages).
    Bytes(&'a [u8]),
    /// A fixed 32- or 64-bit value (skipped by every caller).
    Fixed,
}

impl<'a> Value<'a> {
    /// The bytes of a length-delimited field, or an error naming `field`.
    pub(crate) fn bytes(self, field: u32) -> Result<&'a [u8], PbError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(PbError::Field(field)),
        }
    }

    /// The value of a varint field, or an error naming `field`.
    pub(crate) fn varint(self, field: u32) -> Result<u64, PbError> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(PbError::Field(field)),
        }
    }
}

/// Iterates the fields of one message.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The fields of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PbError> {
        if self.buf.len() < n {
            return Err(PbError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, PbError> {
        let (v, n) = get_varint(self.buf)?;
        self.buf = &self.buf[n..];
        Ok(v)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), PbError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let item = (|| {
            let key = self.varint()?;
            let field = u32::try_from(key >> 3).map_err(|_| PbError::Field(u32::MAX))?;
            let value = match (key & 7) as u8 {
                VARINT => Value::Varint(self.varint()?),
                LEN => {
                    let len = usize::try_from(self.varint()?).map_err(|_| PbError::Truncated)?;
                    Value::Bytes(self.take(len)?)
                }
                FIXED64 => {
                    self.take(8)?;
                    Value::Fixed
                }
                FIXED32 => {
                    self.take(4)?;
                    Value::Fixed
                }
                other => return Err(PbError::WireType(other)),
            };
            Ok((field, value))
        })();
        if item.is_err() {
            // Stop after the first error: the rest cannot be framed.
            self.buf = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(get_varint(&out), Ok((v, out.len())));
        }
        assert_eq!(get_varint(&[0x80]), Err(PbError::Truncated));
        assert_eq!(get_varint(&[0xff; 11]), Err(PbError::Overlong));
    }

    #[test]
    fn fields_are_read_back_and_truncation_is_an_error() {
        let mut out = Vec::new();
        put_varint_field(&mut out, 3, 42);
        put_bytes_field(&mut out, 1, b"abc");
        let fields: Vec<_> = Fields::new(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            fields,
            vec![(3, Value::Varint(42)), (1, Value::Bytes(b"abc"))]
        );
        let cut = &out[..out.len() - 1];
        assert!(Fields::new(cut).any(|f| f.is_err()));
    }
}
