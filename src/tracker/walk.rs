//! The full comparison's merge walk: three lists in CID-bytes order — the
//! pins the state wants here (the state store iterates in that order), the
//! pins the IPFS node holds, the pins this peer manages (its redb file) —
//! walked together once, yielding one [`Finding`] per CID that is wanted or
//! managed. Memory: the node's list, at most.
//!
//! No backend lists in that order through [`IpfsBackend::pin_ls`]
//! (`crate::ipfs::IpfsBackend`): Kubo's `pin ls` is unordered, and the
//! embedded node lists recursive and direct pins as two ordered runs. So
//! the node's list is collected once into a compact sorted vector of CID
//! bytes ([`SortedCids`]); a stable sort merges the embedded node's two
//! runs in linear time.
//!
//! Pure: no I/O, no clock; the tracker feeds it and acts on the findings.

use std::cmp::Ordering;

use crate::manifest::CidKey;

/// What the state asks of a pin wanted here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Wanted {
    /// Recursive (else direct).
    pub recursive: bool,
    /// With `recursive`: only this many links deep (a shard pin).
    pub max_depth: Option<u32>,
    /// Where to fetch from.
    pub origins: Vec<String>,
}

/// One CID the comparison must look at: wanted here, managed, or both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Finding {
    /// The pin.
    pub cid: CidKey,
    /// Wanted here, with its options.
    pub wanted: Option<Wanted>,
    /// The node holds it (when the listing failed: it is managed).
    pub held: bool,
    /// This peer manages it (as of the walk's snapshot).
    pub managed: bool,
}

/// CIDs as bytes in one buffer, sorted and deduplicated by
/// [`finish`](Self::finish): about 44 bytes per CIDv1.
#[derive(Clone, Debug, Default)]
pub(super) struct SortedCids {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    order: Vec<u32>,
}

impl SortedCids {
    /// Adds one CID.
    pub(super) fn push(&mut self, cid: &CidKey) {
        // Writing into a Vec cannot fail.
        let _ = cid.cid().write_bytes(&mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// Sorts by bytes and drops duplicates (a CID pinned both ways).
    pub(super) fn finish(&mut self) {
        let mut order: Vec<u32> = (0..self.ends.len() as u32).collect();
        order.sort_by(|a, b| self.get(*a as usize).cmp(self.get(*b as usize)));
        order.dedup_by(|a, b| self.get(*a as usize) == self.get(*b as usize));
        self.order = order;
    }

    /// How many distinct CIDs (after `finish`).
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// The CIDs in order (after `finish`).
    pub(super) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.order.iter().map(|i| self.get(*i as usize))
    }
}

/// The merge: call [`wanted`](Self::wanted) for each pin the state wants
/// here, in CID-bytes order, then [`finish`](Self::finish).
pub(super) struct Merge<'h, H, M>
where
    H: Iterator<Item = &'h [u8]>,
    M: Iterator<Item = Vec<u8>>,
{
    /// `None`: the node's list is unknown; what is managed counts as held.
    held: Option<std::iter::Peekable<H>>,
    managed: std::iter::Peekable<M>,
}

impl<'h, H, M> Merge<'h, H, M>
where
    H: Iterator<Item = &'h [u8]>,
    M: Iterator<Item = Vec<u8>>,
{
    /// A merge of the node's list (`None` when it could not be listed) and
    /// the managed CIDs, both in CID-bytes order.
    pub(super) fn new(held: Option<H>, managed: M) -> Self {
        Self {
            held: held.map(Iterator::peekable),
            managed: managed.peekable(),
        }
    }

    /// Whether the node holds `key`; keys must be asked in order.
    fn held(&mut self, key: &[u8], managed: bool) -> bool {
        let Some(held) = &mut self.held else {
            return managed;
        };
        while let Some(h) = held.peek() {
            match (*h).cmp(key) {
                Ordering::Less => {
                    held.next();
                }
                Ordering::Equal => return true,
                Ordering::Greater => return false,
            }
        }
        false
    }

    /// Emits the managed CIDs before `key` (not wanted: released).
    fn released_before(&mut self, key: Option<&[u8]>, out: &mut impl FnMut(Finding)) {
        while let Some(m) = self.managed.peek() {
            if key.is_some_and(|k| m.as_slice() >= k) {
                return;
            }
            let Some(m) = self.managed.next() else { return };
            let Some(cid) = cid::Cid::try_from(m.as_slice())
                .ok()
                .and_then(|c| CidKey::from_cid(c).ok())
            else {
                continue;
            };
            let held = self.held(&m, true);
            out(Finding {
                cid,
                wanted: None,
                held,
                managed: true,
            });
        }
    }

    /// The next pin the state wants here; `key` is its CID's bytes, larger
    /// than the previous call's.
    pub(super) fn wanted(
        &mut self,
        key: &[u8],
        cid: CidKey,
        wanted: Wanted,
        out: &mut impl FnMut(Finding),
    ) {
        self.released_before(Some(key), out);
        let managed = self.managed.next_if(|m| m.as_slice() == key).is_some();
        let held = self.held(key, managed);
        out(Finding {
            cid,
            wanted: Some(wanted),
            held,
            managed,
        });
    }

    /// Emits the managed CIDs after the last wanted one.
    pub(super) fn finish(mut self, out: &mut impl FnMut(Finding)) {
        self.released_before(None, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::seq_cid;

    fn sorted(cids: &[CidKey]) -> SortedCids {
        let mut s = SortedCids::default();
        for c in cids {
            s.push(c);
        }
        s.finish();
        s
    }

    #[test]
    fn the_node_list_is_sorted_by_bytes_and_deduplicated() {
        let cids: Vec<CidKey> = (0..50).map(seq_cid).collect();
        let mut twice = cids.clone();
        twice.extend(cids.iter().rev().take(10));
        let s = sorted(&twice);
        let mut want: Vec<Vec<u8>> = cids.iter().map(|c| c.cid().to_bytes()).collect();
        want.sort();
        assert_eq!(s.len(), 50);
        assert_eq!(s.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), want);
    }

    #[test]
    fn every_wanted_or_managed_cid_is_found_once() {
        let w = Wanted {
            recursive: true,
            max_depth: None,
            origins: Vec::new(),
        };
        // 0..4 wanted, 2..6 managed, 1, 3, 5 and 7 held.
        let key = |i: u64| seq_cid(i).cid().to_bytes();
        let mut order: Vec<u64> = (0..8).collect();
        order.sort_by_key(|i| key(*i));
        let held = sorted(&[1, 3, 5, 7].map(seq_cid));
        let managed: Vec<Vec<u8>> = order
            .iter()
            .filter(|i| (2..6).contains(*i))
            .map(|i| key(*i))
            .collect();
        let mut found = Vec::new();
        let mut merge = Merge::new(Some(held.iter()), managed.into_iter());
        for i in order.iter().filter(|i| **i < 4) {
            merge.wanted(&key(*i), seq_cid(*i), w.clone(), &mut |f| found.push(f));
        }
        merge.finish(&mut |f| found.push(f));
        let mut got: Vec<(u64, bool, bool, bool)> = found
            .iter()
            .map(|f| {
                let i = (0..8).find(|i| seq_cid(*i) == f.cid).unwrap();
                (i, f.wanted.is_some(), f.held, f.managed)
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (0, true, false, false),
                (1, true, true, false),
                (2, true, false, true),
                (3, true, true, true),
                (4, false, false, true),
                (5, false, true, true),
            ],
            "7 is held but neither wanted nor managed: not ours"
        );
    }
}
