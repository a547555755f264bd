//! The balanced order of IPFS Cluster's `allocator/balanced`, made
//! deterministic and aware of peers already chosen.
//!
//! Peers are partitioned by the first `allocate_by` metric, each partition
//! by the next metric, and so on. Peers whose (partitionable) metrics share
//! a value share a partition; a non-partitionable metric puts every peer in
//! a partition of its own. Partitions are ordered by weight (the sum of
//! their metrics' weights), then by the weight of everything below them,
//! then by value, then by their smallest peer id. Choosing the next peer
//! takes, at every level, the partition that has given the fewest peers so
//! far (ties: the first in order) — the same sequence as IPFS Cluster's
//! round robin, but it can start from counts that include peers already
//! holding the pin ("seeds"), so a top-up does not pile onto their groups.
//!
//! Differences from IPFS Cluster, on purpose: a peer lacking a metric is
//! not dropped but goes to a "missing" partition ordered after all others
//! (untagged peers form one group of their own), and the last tie-break is
//! the peer id instead of Go's map order.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::metrics::Metric;

/// Where a peer sits at one level of the tree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key<'a> {
    /// A partitionable metric's value: shared by every peer with it.
    Shared(&'a str),
    /// A non-partitionable metric: the peer alone.
    Own(&'a str, &'a str),
    /// No usable metric of this name.
    Missing,
}

#[derive(Debug)]
struct Part<'a> {
    key: Key<'a>,
    weight: i128,
    below: i128,
    first: &'a str,
    /// Peers taken from this partition so far, seeds included.
    used: usize,
    /// Pool peers not yet taken.
    left: usize,
    node: Node<'a>,
}

#[derive(Debug)]
enum Node<'a> {
    /// Below the last metric: peers in id order.
    Leaf { peers: Vec<&'a str>, next: usize },
    /// Partitions by `name`, in preference order.
    Split { name: &'a str, parts: Vec<Part<'a>> },
}

/// Returns up to `n` peers of `pool` in balanced order, treating `seeds`
/// as already chosen. `usable(peer, name)` gives a peer's usable metric.
/// `pool` must be free of duplicates and disjoint from `seeds`.
pub(super) fn select<'a, F>(
    pool: &[&'a str],
    n: usize,
    seeds: &[&'a str],
    by: &'a [String],
    usable: &F,
) -> Vec<&'a str>
where
    F: Fn(&str, &str) -> Option<&'a Metric>,
{
    if n == 0 || pool.is_empty() {
        return Vec::new();
    }
    let mut sorted = pool.to_vec();
    sorted.sort_unstable();
    let mut root = build(sorted, by, usable);
    for seed in seeds {
        root.seed(seed, usable);
    }
    let mut out = Vec::with_capacity(n.min(pool.len()));
    while out.len() < n {
        match root.pick() {
            Some(p) => out.push(p),
            None => break,
        }
    }
    out
}

fn key_of<'a, F>(peer: &'a str, name: &str, usable: &F) -> (Key<'a>, i64)
where
    F: Fn(&str, &str) -> Option<&'a Metric>,
{
    match usable(peer, name) {
        Some(m) if m.partitionable => (Key::Shared(&m.value), m.weight),
        Some(m) => (Key::Own(&m.value, peer), m.weight),
        None => (Key::Missing, 0),
    }
}

/// `peers` sorted by id.
fn build<'a, F>(peers: Vec<&'a str>, by: &'a [String], usable: &F) -> Node<'a>
where
    F: Fn(&str, &str) -> Option<&'a Metric>,
{
    let Some((name, rest)) = by.split_first() else {
        return Node::Leaf { peers, next: 0 };
    };
    let mut groups: BTreeMap<Key<'a>, (i128, Vec<&'a str>)> = BTreeMap::new();
    for peer in peers {
        let (key, weight) = key_of(peer, name, usable);
        // Peers arrive sorted, so each group's peers stay sorted.
        let (w, members) = groups.entry(key).or_default();
        *w += i128::from(weight);
        members.push(peer);
    }
    let mut parts: Vec<Part<'a>> = groups
        .into_iter()
        .map(|(key, (weight, members))| {
            let first = members.first().copied().unwrap_or_default();
            let left = members.len();
            let node = build(members, rest, usable);
            let below = weight + node.weight();
            Part {
                key,
                weight,
                below,
                first,
                used: 0,
                left,
                node,
            }
        })
        .collect();
    parts.sort_by(|a, b| a.order().cmp(&b.order()));
    Node::Split { name, parts }
}

impl<'a> Part<'a> {
    fn order(&self) -> (bool, Reverse<i128>, Reverse<i128>, &str, &str) {
        let value = match self.key {
            Key::Shared(v) | Key::Own(v, _) => v,
            Key::Missing => "",
        };
        (
            self.key == Key::Missing,
            Reverse(self.weight),
            Reverse(self.below),
            value,
            self.first,
        )
    }
}

impl<'a> Node<'a> {
    /// The aggregated weight of everything in this node.
    fn weight(&self) -> i128 {
        match self {
            Node::Leaf { .. } => 0,
            Node::Split { parts, .. } => parts.iter().map(|p| p.below).sum(),
        }
    }

    fn seed<F>(&mut self, peer: &'a str, usable: &F)
    where
        F: Fn(&str, &str) -> Option<&'a Metric>,
    {
        let Node::Split { name, parts } = self else {
            return;
        };
        let (key, _) = key_of(peer, name, usable);
        if let Some(part) = parts.iter_mut().find(|p| p.key == key) {
            part.used += 1;
            part.node.seed(peer, usable);
        }
    }

    fn pick(&mut self) -> Option<&'a str> {
        match self {
            Node::Leaf { peers, next } => {
                let p = peers.get(*next).copied();
                *next += 1;
                p
            }
            Node::Split { parts, .. } => {
                // Fewest used first; `min_by_key` keeps the first of equals,
                // which is the preferred partition.
                let part = parts
                    .iter_mut()
                    .filter(|p| p.left > 0)
                    .min_by_key(|p| p.used)?;
                part.used += 1;
                part.left -= 1;
                part.node.pick()
            }
        }
    }
}
