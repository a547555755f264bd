//! Reading content back through a backend: what a path names
//! ([`Content`]: a file and its size, a directory and its entries, a
//! symlink) for [`IpfsBackend::get`](super::IpfsBackend::get), and the
//! byte-range arithmetic a read of a file uses.
//!
//! It owns these shapes and pure arithmetic only; fetching blocks and
//! talking to Kubo belong to the backends, HTTP ranges to the API.

use cid::Cid;

/// What kind of entry a directory lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A UnixFS file (or a raw block).
    File,
    /// A directory (basic or HAMT-sharded).
    Directory,
    /// A symlink.
    Symlink,
}

impl EntryKind {
    /// The name the API uses (`file`, `directory`, `symlink`).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
        }
    }
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Its name in the directory.
    pub name: String,
    /// Its CID, as the directory links it.
    pub cid: Cid,
    /// File bytes for a file; 0 for a directory or a symlink.
    pub size: u64,
    /// What it is.
    pub kind: EntryKind,
    /// A symlink's target.
    pub target: Option<String>,
}

/// What an IPFS path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A file of `size` bytes.
    File {
        /// Its CID.
        cid: Cid,
        /// Its length in bytes.
        size: u64,
    },
    /// A directory and its entries, in the directory's order.
    Directory {
        /// Its CID.
        cid: Cid,
        /// Its entries.
        entries: Vec<DirEntry>,
    },
    /// A symlink (never followed).
    Symlink {
        /// Its CID.
        cid: Cid,
        /// Where it points.
        target: String,
    },
}

/// The part of a node's bytes `[start, end)` that falls in each of its
/// pieces: `inline` bytes of its own first (a UnixFS node's `Data`), then
/// children of the given sizes, in order. Returns the range of the inline
/// bytes to take (maybe empty) and, for each child the range touches, its
/// index and the range relative to that child. Sizes that overflow are
/// clamped (the caller checks the sizes against the blocks it reads).
pub fn split_range(
    inline: u64,
    children: &[u64],
    start: u64,
    end: u64,
) -> (std::ops::Range<u64>, Vec<(usize, u64, u64)>) {
    let own = start.min(inline)..end.min(inline);
    let mut out = Vec::new();
    let mut at = inline;
    for (i, &size) in children.iter().enumerate() {
        let next = at.saturating_add(size);
        if next > start && at < end && size > 0 {
            let from = start.max(at) - at;
            let to = end.min(next) - at;
            out.push((i, from, to));
        }
        if next >= end {
            break;
        }
        at = next;
    }
    (own, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_in_one_child_touches_only_that_child() {
        let (own, kids) = split_range(0, &[10, 10, 10], 12, 15);
        assert!(own.is_empty());
        assert_eq!(kids, [(1, 2, 5)]);
    }

    #[test]
    fn a_range_across_children_takes_each_part_in_order() {
        let (own, kids) = split_range(0, &[10, 10, 10], 5, 25);
        assert!(own.is_empty());
        assert_eq!(kids, [(0, 5, 10), (1, 0, 10), (2, 0, 5)]);
        // The whole node.
        let (_, kids) = split_range(0, &[10, 10, 10], 0, 30);
        assert_eq!(kids, [(0, 0, 10), (1, 0, 10), (2, 0, 10)]);
    }

    #[test]
    fn inline_bytes_come_before_the_children() {
        let (own, kids) = split_range(4, &[10], 2, 8);
        assert_eq!(own, 2..4);
        assert_eq!(kids, [(0, 0, 4)]);
        let (own, kids) = split_range(4, &[10], 0, 3);
        assert_eq!(own, 0..3);
        assert!(kids.is_empty());
    }

    #[test]
    fn empty_children_and_ranges_past_the_end_are_skipped() {
        let (_, kids) = split_range(0, &[0, 5, 0, 5], 0, 10);
        assert_eq!(kids, [(1, 0, 5), (3, 0, 5)]);
        let (own, kids) = split_range(0, &[5], 7, 9);
        assert!(own.is_empty());
        assert!(kids.is_empty());
        let (_, kids) = split_range(0, &[u64::MAX, 5], 0, u64::MAX);
        assert_eq!(kids, [(0, 0, u64::MAX)]);
    }

    #[test]
    fn the_last_byte_is_in_the_last_child() {
        let (_, kids) = split_range(0, &[262_144, 262_144, 100], 524_387, 524_388);
        assert_eq!(kids, [(2, 99, 100)]);
    }
}
