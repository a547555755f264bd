//! Input generators for the property tests that fuzz pinfleet's decoders:
//! arbitrary bytes, and mutations of a valid input (bytes flipped, set,
//! inserted, deleted, a span repeated, the tail cut), so that most cases get
//! past the first check and reach the deeper parsing.
//!
//! Test-only; it must not hold expectations about any one decoder (the
//! tests next to each decoder do).

use proptest::prelude::*;

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Clone, Debug)]
pub(crate) enum Edit {
    /// XOR a byte with a non-zero mask.
    Flip(usize, u8),
    /// Overwrite a byte.
    Set(usize, u8),
    /// Insert bytes (arbitrary, or one of the caller's tokens).
    Insert(usize, Vec<u8>),
    /// Remove up to `n` bytes.
    Delete(usize, usize),
    /// Repeat the span `[at, at + len)` `times` more times, in place.
    Repeat(usize, usize, usize),
    /// Keep only the first bytes.
    Truncate(usize),
}

/// Applies `edits` in order. The output is at most the input plus 8 × 64
/// bytes per edit long.
pub(crate) fn apply(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, m) if !out.is_empty() => {
                let i = i % out.len();
                out[i] ^= m | 1;
            }
            Edit::Set(i, b) if !out.is_empty() => {
                let i = i % out.len();
                out[i] = *b;
            }
            Edit::Insert(i, ins) => {
                let i = at(*i, out.len());
                out.splice(i..i, ins.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(*i, out.len());
                let end = (i + n).min(out.len());
                out.drain(i..end);
            }
            Edit::Repeat(i, len, times) => {
                let i = at(*i, out.len());
                let end = (i + len).min(out.len());
                let span = out[i..end].to_vec();
                for _ in 0..*times {
                    out.splice(end..end, span.iter().copied());
                }
            }
            Edit::Truncate(n) => {
                let n = at(*n, out.len());
                out.truncate(n);
            }
            Edit::Flip(..) | Edit::Set(..) => {}
        }
    }
    out
}

/// One edit, inserting either up to 8 arbitrary bytes or one of `tokens`
/// (the syntax of the format under test: `:`, `&a`, `{`, a varint…).
pub(crate) fn edit(tokens: &'static [&'static [u8]]) -> impl Strategy<Value = Edit> {
    let token = if tokens.is_empty() {
        proptest::collection::vec(any::<u8>(), 0..8).boxed()
    } else {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::sample::select(tokens).prop_map(<[u8]>::to_vec),
        ]
        .boxed()
    };
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, m)| Edit::Flip(i, m)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), token).prop_map(|(i, t)| Edit::Insert(i, t)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), 1usize..64, 1usize..8).prop_map(|(i, l, t)| Edit::Repeat(i, l, t)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// One of `valid`, changed by one to `max_edits` edits.
pub(crate) fn mutated(
    valid: Vec<Vec<u8>>,
    tokens: &'static [&'static [u8]],
    max_edits: usize,
) -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(valid),
        proptest::collection::vec(edit(tokens), 1..=max_edits.max(1)),
    )
        .prop_map(|(v, edits)| apply(&v, &edits))
}

/// Up to `max` arbitrary bytes.
pub(crate) fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_change_the_input_as_named() {
        let v = b"abcdef";
        assert_eq!(apply(v, &[Edit::Set(1, b'X')]), b"aXcdef");
        assert_eq!(apply(v, &[Edit::Insert(0, b"--".to_vec())]), b"--abcdef");
        assert_eq!(apply(v, &[Edit::Delete(4, 9)]), b"abcd");
        assert_eq!(apply(v, &[Edit::Repeat(1, 2, 2)]), b"abcbcbcdef");
        assert_eq!(apply(v, &[Edit::Truncate(3)]), b"abc");
        assert_eq!(apply(b"", &[Edit::Flip(3, 0), Edit::Delete(2, 2)]), b"");
    }
}
