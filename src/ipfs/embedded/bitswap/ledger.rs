//! A peer's wants this node has yet to answer: at most [`PEER_WANTS`],
//! oldest first, one entry per CID, with cancels and full wantlists applied
//! as they arrive. Whatever a peer sends, what it costs us to remember is
//! bounded here (the oldest wants are dropped; the peer rebroadcasts).
//!
//! It must not read the store, do I/O, or know about other peers.

use std::collections::{BTreeMap, HashMap};

use cid::Cid;

use super::wire::{WantEntry, WantType, Wantlist};

/// Wants remembered per peer (each a CID of at most ~70 bytes: about
/// 200 bytes with its entry), as go-bitswap bounds a peer's wantlist.
pub(super) const PEER_WANTS: usize = 4096;

/// One peer's unanswered wants.
#[derive(Default)]
pub(super) struct Ledger {
    /// CID bytes by arrival.
    order: BTreeMap<u64, Vec<u8>>,
    /// Wants by CID bytes, with their place in `order`.
    wants: HashMap<Vec<u8>, (u64, WantEntry)>,
    next: u64,
    /// Wants dropped to stay within [`PEER_WANTS`].
    dropped: u64,
}

impl Ledger {
    /// Applies a received wantlist: a full one replaces what is queued;
    /// cancels withdraw; a want already queued keeps its place (a
    /// `want-block` upgrades a `want-have`). Entries whose CID does not
    /// parse are ignored. `old` (a peer before 1.2.0) reads every want as
    /// `want-block` without `sendDontHave`.
    pub(super) fn apply(&mut self, wantlist: Wantlist, old: bool) {
        if wantlist.full {
            self.order.clear();
            self.wants.clear();
        }
        for mut e in wantlist.entries {
            if e.cancel {
                if let Some((seq, _)) = self.wants.remove(&e.cid) {
                    self.order.remove(&seq);
                }
                continue;
            }
            if old {
                e.want_type = WantType::Block.into();
                e.send_dont_have = false;
            }
            if let Some((_, queued)) = self.wants.get_mut(&e.cid) {
                if !e.want_have() {
                    queued.want_type = e.want_type;
                }
                queued.send_dont_have |= e.send_dont_have;
                continue;
            }
            // Bounds what one entry costs: a CID has at most a 64-byte digest.
            if Cid::try_from(e.cid.as_slice()).is_err() {
                continue;
            }
            let seq = self.next;
            self.next += 1;
            self.order.insert(seq, e.cid.clone());
            self.wants.insert(e.cid.clone(), (seq, e));
            if self.wants.len() > PEER_WANTS {
                self.pop();
                self.dropped += 1;
            }
        }
    }

    fn pop(&mut self) -> Option<WantEntry> {
        let (_, cid) = self.order.pop_first()?;
        self.wants.remove(&cid).map(|(_, e)| e)
    }

    /// Takes up to `n` of the oldest wants.
    pub(super) fn take(&mut self, n: usize) -> Vec<WantEntry> {
        std::iter::from_fn(|| self.pop()).take(n).collect()
    }

    /// Wants queued.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.wants.len()
    }

    /// Wants dropped so far to stay within [`PEER_WANTS`].
    #[cfg(test)]
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::tests::raw_cid;
    use super::*;

    fn list(entries: Vec<WantEntry>, full: bool) -> Wantlist {
        Wantlist { entries, full }
    }

    fn cids(l: &mut Ledger) -> Vec<(Vec<u8>, bool)> {
        l.take(usize::MAX)
            .into_iter()
            .map(|e| (e.cid.clone(), e.want_have()))
            .collect()
    }

    #[test]
    fn wants_are_kept_once_in_order_and_cancels_and_full_lists_apply() {
        let (a, b, c) = (raw_cid(b"a"), raw_cid(b"b"), raw_cid(b"c"));
        let mut l = Ledger::default();
        l.apply(
            list(
                vec![
                    WantEntry::new(&a, true, true),
                    WantEntry::new(&b, false, true),
                    WantEntry::new(&a, false, true),
                    WantEntry::new(&c, false, true),
                ],
                false,
            ),
            false,
        );
        let cancel = WantEntry {
            cancel: true,
            ..WantEntry::new(&b, false, false)
        };
        l.apply(list(vec![cancel], false), false);
        assert_eq!(
            cids(&mut l),
            vec![(a.to_bytes(), false), (c.to_bytes(), false)]
        );

        l.apply(list(vec![WantEntry::new(&a, true, true)], false), false);
        l.apply(list(vec![WantEntry::new(&c, true, true)], true), false);
        assert_eq!(cids(&mut l), vec![(c.to_bytes(), true)]);

        // A peer before 1.2.0 knows no want-have.
        l.apply(list(vec![WantEntry::new(&b, true, true)], false), true);
        let e = l.take(1).remove(0);
        assert!(!e.want_have() && !e.send_dont_have);
    }

    #[test]
    fn a_huge_wantlist_keeps_only_the_newest_wants_and_junk_cids_are_ignored() {
        let mut l = Ledger::default();
        let n = PEER_WANTS + 1000;
        let mut entries: Vec<WantEntry> = (0..n)
            .map(|i| WantEntry::new(&raw_cid(&i.to_le_bytes()), false, true))
            .collect();
        entries.push(WantEntry {
            cid: vec![0xff; 1 << 16],
            ..WantEntry::new(&raw_cid(b"x"), false, true)
        });
        l.apply(list(entries, false), false);
        assert_eq!(l.len(), PEER_WANTS);
        assert_eq!(l.dropped(), 1000);
        let first = l.take(1).remove(0);
        assert_eq!(first.cid, raw_cid(&1000usize.to_le_bytes()).to_bytes());
    }
}
