//! Reloading a changed `pinsFrom` list without reparsing it: the lines of
//! the old and new file are compared by hash, only the lines that differ
//! are parsed, and the PinSet loaded from the old file is updated in place.
//! What a mirror's hourly rewrite of a million-CID list (1% changed) costs
//! is then a hash of the file and 1% of the parsing.
//!
//! Pure: bytes in, changes out. Whenever the shortcut cannot prove it gives
//! what a full load would (a line that does not parse, a duplicate CID, a
//! limit), it answers `None` and the caller loads the revision in full,
//! which reports the problem with its file:line:col.
//!
//! Lines are told apart by a 64-bit hash seeded per process, so two
//! different lines share a hash with odds of about 2⁻⁶⁴ per pair.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::cidkey::CidKey;
use super::desired::{DesiredPin, DesiredPinSet, PinOptions, PinSpec};
use super::load::{parse_list_line, written_as};

/// Largest file a [`LineIndex`] can describe.
pub const MAX_INDEXED_BYTES: usize = u32::MAX as usize;

/// Every line of a list file by hash: `(hash, byte offset of the line)`,
/// sorted.
#[derive(Clone, Debug, Default)]
pub struct LineIndex {
    lines: Vec<(u64, u32)>,
}

fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(rand::random)
}

/// A multiply-rotate hash of one line, eight bytes at a time.
fn hash_line(line: &[u8], seed: u64) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = seed ^ (line.len() as u64).wrapping_mul(K);
    let mut chunks = line.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let mut w = [0u8; 8];
    let rest = chunks.remainder();
    w[..rest.len()].copy_from_slice(rest);
    h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    // Final avalanche, so that the low bits depend on every byte too.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

fn hash_lines(bytes: &[u8], base: usize, seed: u64) -> Vec<(u64, u32)> {
    let mut out = Vec::with_capacity(bytes.len() / 64 + 1);
    let mut start = 0;
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| start + i);
        // Offsets fit: list files are limited to well under 4 GiB.
        let offset = u32::try_from(base + start).unwrap_or(u32::MAX);
        out.push((hash_line(&bytes[start..end], seed), offset));
        start = end + 1;
    }
    out.sort_unstable();
    out
}

impl LineIndex {
    /// Indexes `bytes`, on two threads for large files. Offsets are 32-bit:
    /// callers index files under 4 GiB only (see [`MAX_INDEXED_BYTES`]).
    pub fn new(bytes: &[u8]) -> Self {
        let seed = seed();
        const PARALLEL_ABOVE: usize = 1 << 20;
        if bytes.len() < PARALLEL_ABOVE {
            return Self {
                lines: hash_lines(bytes, 0, seed),
            };
        }
        // Split after a newline near the middle.
        let mid = bytes[bytes.len() / 2..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| bytes.len() / 2 + i + 1);
        let (a, b) = bytes.split_at(mid);
        let (left, right) = std::thread::scope(|s| {
            let right = s.spawn(|| hash_lines(b, mid, seed));
            let left = hash_lines(a, 0, seed);
            // A panic cannot come from hashing; recomputing keeps it correct.
            let right = right.join().unwrap_or_else(|_| hash_lines(b, mid, seed));
            (left, right)
        });
        // Merge the two sorted halves.
        let mut lines = Vec::with_capacity(left.len() + right.len());
        let (mut i, mut j) = (0, 0);
        while i < left.len() && j < right.len() {
            if left[i] <= right[j] {
                lines.push(left[i]);
                i += 1;
            } else {
                lines.push(right[j]);
                j += 1;
            }
        }
        lines.extend_from_slice(&left[i..]);
        lines.extend_from_slice(&right[j..]);
        Self { lines }
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// The lines only in the old file and only in the new one (byte offsets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineDiff {
    /// Offsets, in the old file, of lines the new one does not have.
    pub removed: Vec<u32>,
    /// Offsets, in the new file, of lines the old one did not have.
    pub added: Vec<u32>,
}

/// Compares two indexed files as multisets of lines.
pub fn diff_lines(old: &LineIndex, new: &LineIndex) -> LineDiff {
    let mut d = LineDiff::default();
    let (a, b) = (&old.lines, &new.lines);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                d.removed.push(x.1);
                i += 1;
            }
            (Some(x), None) => {
                d.removed.push(x.1);
                i += 1;
            }
            (_, Some(y)) => {
                d.added.push(y.1);
                j += 1;
            }
            (None, None) => break,
        }
    }
    d.removed.sort_unstable();
    d.added.sort_unstable();
    d
}

fn line_at(bytes: &[u8], offset: u32) -> &[u8] {
    let start = (offset as usize).min(bytes.len());
    let rest = &bytes[start..];
    let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    &rest[..end]
}

/// One list line parsed: `None` for blank and comment lines, `Err` for a
/// line a full load would report.
fn parse_line(line: &[u8], options: &Arc<PinOptions>) -> Result<Option<(CidKey, DesiredPin)>, ()> {
    let line = std::str::from_utf8(line).map_err(|_| ())?;
    let Some(entry) = parse_list_line(line) else {
        return Ok(None);
    };
    let key = CidKey::parse(entry.cid).map_err(|_| ())?;
    let pin = DesiredPin {
        spec: PinSpec {
            name: entry.name.to_string(),
            options: Arc::clone(options),
        },
        written_as: written_as(&key, entry.cid),
    };
    Ok(Some((key, pin)))
}

/// The lines of one changed list of a PinSet, parsed.
#[derive(Clone, Debug, Default)]
pub struct ListChange {
    /// CIDs of the lines that left the list.
    pub removed: Vec<CidKey>,
    /// Pins of the lines that entered it.
    pub added: Vec<(CidKey, DesiredPin)>,
}

impl ListChange {
    /// Parses the lines of `diff` (old lines from `old`, new from `new`);
    /// `None` when a new line does not parse (or an old one no longer does).
    pub fn parse(
        old: &[u8],
        new: &[u8],
        diff: &LineDiff,
        options: &Arc<PinOptions>,
    ) -> Option<Self> {
        let mut out = Self::default();
        for off in &diff.removed {
            if let Some((cid, _)) = parse_line(line_at(old, *off), options).ok()? {
                out.removed.push(cid);
            }
        }
        for off in &diff.added {
            if let Some(pin) = parse_line(line_at(new, *off), options).ok()? {
                out.added.push(pin);
            }
        }
        Some(out)
    }
}

/// What changed in one PinSet between two loads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PinSetChanges {
    /// Pins added or whose name, options or spelling changed, in CID order.
    pub set: Vec<(CidKey, DesiredPin)>,
    /// Pins that left the PinSet, in CID order.
    pub release: Vec<CidKey>,
}

impl PinSetChanges {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.release.is_empty()
    }
}

/// Checks `change` against `pinset` (loaded from the old lists, holding no
/// CID twice) without touching it: `None` when the new lists would hold a
/// CID twice (a full load must judge that) or the old lines do not match
/// the PinSet, or the result would exceed `max_pins`.
pub fn check_change(pinset: &DesiredPinSet, change: &ListChange, max_pins: usize) -> Option<()> {
    let removed: HashSet<&CidKey> = change.removed.iter().collect();
    if removed.len() != change.removed.len() || !removed.iter().all(|c| pinset.pins.contains_key(c))
    {
        return None;
    }
    let mut added = HashSet::with_capacity(change.added.len());
    let mut new_pins = 0usize;
    for (cid, _) in &change.added {
        if !added.insert(cid) {
            return None;
        }
        if !removed.contains(cid) {
            if pinset.pins.contains_key(cid) {
                return None;
            }
            new_pins += 1;
        }
    }
    let gone = removed.iter().filter(|c| !added.contains(*c)).count();
    let total = pinset.pins.len() + new_pins - gone;
    (total <= max_pins).then_some(())
}

/// Applies a change that [`check_change`] accepted to `pinset` and returns
/// what changed.
pub fn apply_change(pinset: &mut DesiredPinSet, change: ListChange) -> PinSetChanges {
    let mut added: HashMap<CidKey, DesiredPin> = change.added.into_iter().collect();
    let mut out = PinSetChanges::default();
    for cid in change.removed {
        if !added.contains_key(&cid) {
            pinset.pins.remove(&cid);
            out.release.push(cid);
        }
    }
    for (cid, pin) in added.drain() {
        let same = pinset
            .pins
            .get(&cid)
            .is_some_and(|p| p.spec.same_as(&pin.spec) && p.written_as == pin.written_as);
        if !same {
            pinset.pins.insert(cid, pin.clone());
            out.set.push((cid, pin));
        }
    }
    out.set.sort_unstable_by_key(|p| p.0);
    out.release.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{seq_cid, seq_pinset};

    fn list(ids: &[u64]) -> Vec<u8> {
        ids.iter()
            .map(|i| format!("{} p{i}\n", seq_cid(*i)))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn only_changed_lines_are_reported() {
        let old = b"a\nb\n\nc\nb\n".to_vec();
        let new = b"b\nc\nd\n\nb".to_vec();
        let d = diff_lines(&LineIndex::new(&old), &LineIndex::new(&new));
        let text = |bytes: &[u8], offs: &[u32]| -> Vec<String> {
            offs.iter()
                .map(|o| String::from_utf8_lossy(line_at(bytes, *o)).into_owned())
                .collect()
        };
        assert_eq!(text(&old, &d.removed), vec!["a".to_string()]);
        assert_eq!(text(&new, &d.added), vec!["d".to_string()]);
    }

    #[test]
    fn a_large_file_indexes_like_a_small_one() {
        let ids: Vec<u64> = (0..30_000).collect();
        let bytes = list(&ids);
        assert!(bytes.len() > 1 << 20);
        let big = LineIndex::new(&bytes);
        assert_eq!(big.len(), 30_000);
        let mut small = hash_lines(&bytes, 0, seed());
        small.sort_unstable();
        assert_eq!(big.lines, small);
    }

    #[test]
    fn a_changed_list_updates_the_pinset_as_a_full_load_would() {
        let old_ids: Vec<u64> = (0..1000).collect();
        let mut new_ids: Vec<u64> = old_ids
            .iter()
            .map(|i| if i % 10 == 0 { i + 5000 } else { *i })
            .collect();
        new_ids.swap(3, 700); // order does not matter
        let (old, new) = (list(&old_ids), list(&new_ids));
        let mut ps = seq_pinset("ns", "a", 0..1000);
        let options = Arc::clone(&ps.pins.values().next().unwrap().spec.options);
        let diff = diff_lines(&LineIndex::new(&old), &LineIndex::new(&new));
        assert_eq!((diff.removed.len(), diff.added.len()), (100, 100));
        let change = ListChange::parse(&old, &new, &diff, &options).unwrap();
        check_change(&ps, &change, usize::MAX).unwrap();
        let changes = apply_change(&mut ps, change);
        assert_eq!((changes.set.len(), changes.release.len()), (100, 100));
        let want: std::collections::BTreeSet<CidKey> =
            new_ids.iter().map(|i| seq_cid(*i)).collect();
        assert!(ps.pins.keys().copied().eq(want));

        // A renamed pin is an update; a CID that is already listed, or a
        // line that does not parse, is left to a full load.
        let renamed = format!("{} other\n", seq_cid(1));
        let old1 = format!("{} p1\n", seq_cid(1)).into_bytes();
        let d = diff_lines(&LineIndex::new(&old1), &LineIndex::new(renamed.as_bytes()));
        let c = ListChange::parse(&old1, renamed.as_bytes(), &d, &options).unwrap();
        check_change(&ps, &c, usize::MAX).unwrap();
        let ch = apply_change(&mut ps, c);
        assert_eq!((ch.set.len(), ch.release.len()), (1, 0));
        assert_eq!(ps.pins[&seq_cid(1)].spec.name, "other");
        let dup = ListChange {
            removed: vec![],
            added: vec![(seq_cid(2), ps.pins[&seq_cid(2)].clone())],
        };
        assert!(check_change(&ps, &dup, usize::MAX).is_none());
        let bad = b"not-a-cid\n".to_vec();
        let d = diff_lines(&LineIndex::new(b""), &LineIndex::new(&bad));
        assert!(ListChange::parse(b"", &bad, &d, &options).is_none());
        let more = ListChange {
            removed: vec![],
            added: vec![(seq_cid(99_999), ps.pins[&seq_cid(2)].clone())],
        };
        assert!(check_change(&ps, &more, ps.pins.len()).is_none());
    }
}
