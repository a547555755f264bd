//! How large a log entry may be, and how its size is measured.
//!
//! Every entry must reach a follower that lags far behind: openraft sends
//! at least one whole entry per `AppendEntries` and gives each message one
//! heartbeat interval, and the p2p layer refuses messages over its limit.
//! So an entry has a hard cap far below both ([`MAX_ENTRY_BYTES`]); writes
//! over it are refused before they reach the log, and the layers that
//! produce large writes (PinSet revisions, allocation rounds) split them to
//! fit. Sizes are the CBOR length the entry travels and is stored with,
//! counted without encoding into memory.

use serde::Serialize;

use crate::state::Command;

/// Largest log entry, encoded (1 MiB): 64 times below the p2p message
/// limit ([`crate::p2p::DEFAULT_MAX_MESSAGE_BYTES`]), and small enough to
/// reach and be stored by a follower within a heartbeat interval.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

// "Far below": a whole message of entries, envelope and all, fits many
// times over.
const _: () = assert!(MAX_ENTRY_BYTES * 16 <= crate::p2p::DEFAULT_MAX_MESSAGE_BYTES);

/// What an entry adds around its command: log id, payload tag, the
/// proposer's clock (an upper bound).
const ENTRY_ENVELOPE: usize = 256;

/// The encoded size of the log entry that would carry `command` (an upper
/// bound, exact up to a few bytes of envelope).
pub fn entry_bytes(command: &Command) -> usize {
    encoded_len(command).saturating_add(ENTRY_ENVELOPE)
}

/// A `cbor4ii` writer that only counts.
struct Counter(usize);

impl cbor4ii::core::enc::Write for Counter {
    type Error = std::convert::Infallible;

    fn push(&mut self, input: &[u8]) -> Result<(), Self::Error> {
        self.0 += input.len();
        Ok(())
    }
}

/// The CBOR length of `value`, as the p2p codec and the log store write
/// it; a value that does not encode counts as huge (it is refused, or
/// goes alone and fails there).
pub(super) fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = Counter(0);
    match value.serialize(&mut cbor4ii::serde::Serializer::new(&mut counter)) {
        Ok(_) => counter.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counted_length_is_the_encoded_length() {
        let command = Command::Abort {
            owner: crate::manifest::Owner::Api,
            revision: 7,
        };
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &command).unwrap();
        assert_eq!(encoded_len(&command), bytes.len());
        assert!(entry_bytes(&command) > bytes.len());
    }
}
