//! Allocation: which peers pin a CID, chosen from the informers' metrics
//! (DESIGN §9, docs/design/allocation.md).
//!
//! Owns the choice of peers for one pin — the balanced order over
//! `allocate_by` metrics, tag constraints, replication bounds, stability of
//! existing allocations — and the decision to re-allocate when peers go
//! away or come back. It is a pure function of its arguments: it never
//! reads a clock (`now_ms` is a parameter), does no I/O, does not log, and
//! knows nothing of Raft. The leader runs it and records the result in the
//! log (`Command::Allocate`); followers apply that result and never call
//! this module, so their own (possibly different) metric views cannot make
//! the replicated state diverge.
//!
//! [`informer`] is the I/O shell around that pure core: the loop on every
//! peer that gossips its metrics, and the leader's loop that runs the
//! allocator and writes its decisions through consensus.

mod balanced;
pub mod informer;
mod metrics;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

pub use metrics::{FREESPACE, Metric, NUMPIN, PINQUEUE, PeerMetrics, TAG_PREFIX};

/// How the allocator orders peers and what `0/0` replication means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocatorConfig {
    /// Metrics to partition and order by, most significant first. Default
    /// `["tag:group", "pinqueue", "freespace"]`: one copy per group before a
    /// group gets a second, then the shortest pin queue, then the most
    /// free space.
    pub allocate_by: Vec<String>,
    /// Replication minimum for pins that say 0 (default -1, every peer).
    pub default_min: i32,
    /// Replication maximum for pins that say 0 (default -1, every peer).
    pub default_max: i32,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        Self {
            allocate_by: vec![
                format!("{TAG_PREFIX}group"),
                PINQUEUE.into(),
                FREESPACE.into(),
            ],
            default_min: -1,
            default_max: -1,
        }
    }
}

/// What is being allocated, and under which constraints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocationRequest {
    /// The pin (carried for the caller; the choice does not depend on it).
    pub cid: String,
    /// Fewest peers: -1 with `replication_max` -1 means every peer; 0 means
    /// the cluster default.
    pub replication_min: i32,
    /// Most peers: -1 means every available peer; 0 means the cluster
    /// default.
    pub replication_max: i32,
    /// Peers currently allocated, in their recorded order.
    pub current: Vec<String>,
    /// Peers the user asked for; they come first when available.
    pub user_allocations: Vec<String>,
    /// Every peer must report `tag:<key>` equal to the value.
    pub allocate_tags: BTreeMap<String, String>,
    /// The leader's clock, in Unix milliseconds, stamped on the proposal.
    pub now_ms: i64,
}

/// The peers chosen for a pin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Peer ids, in order: those from `user_allocations` (in the user's
    /// order), then kept current peers (in their recorded order), then new
    /// peers (in balanced order).
    pub peers: Vec<String>,
    /// Fewer peers than `replication_max` were available: the pin has at
    /// least `replication_min` copies, which is not an error, but it is
    /// short of what was asked. Always false for every-peer pins.
    pub under_replicated: bool,
}

/// Why no allocation could be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The factors (after cluster defaults) are not -1/-1 or
    /// `1 ≤ min ≤ max` (max may be -1).
    #[error("invalid replication factors: min {min}, max {max}")]
    InvalidReplication {
        /// Minimum after defaults.
        min: i32,
        /// Maximum after defaults.
        max: i32,
    },
    /// Fewer peers can hold the pin than its minimum.
    #[error("not enough peers: needed at least {needed}, {available} available")]
    NotEnoughPeers {
        /// The replication minimum.
        needed: usize,
        /// Peers that could hold the pin (kept and new).
        available: usize,
    },
}

/// What the re-allocation loop should do with one pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The allocation stands (including when some allocated peers have
    /// been gone for long, as long as enough others hold the pin).
    Keep,
    /// Fewer than `needed` allocated peers are live or within their grace
    /// period: new peers must be added.
    BelowMin {
        /// Allocated peers that are live or within grace.
        holding: usize,
        /// The replication minimum.
        needed: usize,
    },
    /// Allocated peers that left the cluster or whose tags no longer
    /// match the pin's `allocate_tags`: they must be replaced.
    Misplaced {
        /// Those peers.
        peers: Vec<String>,
    },
    /// An every-peer pin is missing peers that could hold it (joined or
    /// back online).
    NewPeers {
        /// Those peers, in id order.
        peers: Vec<String>,
    },
    /// More allocated peers are live than `max` (peers came back after
    /// their pins were re-allocated, or max was lowered): extra copies can
    /// be released.
    OverMax {
        /// Live allocated peers.
        live: usize,
        /// The replication maximum.
        max: usize,
    },
}

/// Chooses the peers that pin `req.cid`.
///
/// A peer can hold the pin when it is one of `candidates` (the cluster's
/// members), has at least one unexpired metric, and reports every
/// `allocate_tags` tag with the asked value. Current allocations that can
/// hold it are kept (up to `replication_max`, keeping user allocations and
/// then the best in balanced order); the rest is filled, up to
/// `replication_max`, from peers that can also take new pins — at least one
/// valid unexpired metric and no `allocate_by` metric reported invalid (a
/// full disk) — user allocations first, then in balanced order. An
/// every-peer pin gets every such peer.
///
/// Same arguments, same answer: the order of `candidates` and of metric
/// insertion does not matter, and ties end on the peer id.
///
/// # Errors
///
/// `InvalidReplication` for factors outside -1/-1 and `1 ≤ min ≤ max`;
/// `NotEnoughPeers` when fewer than `replication_min` peers can hold it.
pub fn allocate(
    req: &AllocationRequest,
    metrics: &PeerMetrics,
    candidates: &[String],
    config: &AllocatorConfig,
) -> Result<Allocation, AllocError> {
    let factors = Factors::resolve(req, config)?;
    let view = View::new(req, metrics, candidates, config);
    let chosen = choose(req, &view, factors)?;
    let peers = chosen.in_output_order(req);
    let under_replicated = factors.wanted.is_some_and(|w| peers.len() < w);
    Ok(Allocation {
        peers,
        under_replicated,
    })
}

/// Decides whether the pin described by `req` (with `req.current` its
/// recorded allocation) must be re-allocated, at `req.now_ms`.
///
/// Each allocated peer is *live* (a member with an unexpired metric and
/// matching tags), *within grace* (no unexpired metric, but the last one
/// expired at most `grace_ms` ago), *gone* (longer, or never seen), or
/// *misplaced* (not a member, or live with tags that no longer match).
/// Peers gone for long stay allocated while live and within-grace peers
/// still reach the minimum — as in IPFS Cluster, a pin is only moved when
/// it must be — and when they come back, copies beyond the maximum are
/// released.
///
/// # Errors
///
/// `InvalidReplication`, as for [`allocate`].
pub fn reallocate_needed(
    req: &AllocationRequest,
    metrics: &PeerMetrics,
    candidates: &[String],
    config: &AllocatorConfig,
    grace_ms: i64,
) -> Result<Decision, AllocError> {
    let factors = Factors::resolve(req, config)?;
    let view = View::new(req, metrics, candidates, config);
    let mut live = 0;
    let mut graced = 0;
    let mut misplaced = Vec::new();
    for peer in dedup(&req.current) {
        match view.health(peer, grace_ms) {
            Health::Live => live += 1,
            Health::Graced => graced += 1,
            Health::Gone => {}
            Health::Misplaced => misplaced.push(peer.to_owned()),
        }
    }
    if !misplaced.is_empty() {
        return Ok(Decision::Misplaced { peers: misplaced });
    }
    match factors.wanted {
        None => {
            let current: BTreeSet<&str> = dedup(&req.current).collect();
            let peers: Vec<String> = view
                .members
                .iter()
                .filter(|p| !current.contains(*p) && view.can_take_new(p))
                .map(|p| (*p).to_owned())
                .collect();
            if !peers.is_empty() {
                return Ok(Decision::NewPeers { peers });
            }
        }
        Some(max) if live > max => return Ok(Decision::OverMax { live, max }),
        Some(_) => {}
    }
    let holding = live + graced;
    if holding < factors.needed {
        return Ok(Decision::BelowMin {
            holding,
            needed: factors.needed,
        });
    }
    Ok(Decision::Keep)
}

/// The re-allocation loop's step for one pin: [`reallocate_needed`], then,
/// unless the answer is `Keep`, [`allocate`] from the current allocation.
/// Peers within their grace period keep their place (after the others,
/// not counted towards the minimum), so a peer that restarts does not lose
/// its copies; if it comes back while its replacements hold the pin, the
/// next step releases the copies beyond the maximum.
///
/// Returns `None` when the recorded allocation stands.
///
/// # Errors
///
/// As [`allocate`]; the caller keeps the recorded allocation and retries
/// on a later round.
pub fn reallocate(
    req: &AllocationRequest,
    metrics: &PeerMetrics,
    candidates: &[String],
    config: &AllocatorConfig,
    grace_ms: i64,
) -> Result<Option<Allocation>, AllocError> {
    let decision = reallocate_needed(req, metrics, candidates, config, grace_ms)?;
    if decision == Decision::Keep {
        return Ok(None);
    }
    let mut alloc = allocate(req, metrics, candidates, config)?;
    if !matches!(decision, Decision::OverMax { .. }) {
        let view = View::new(req, metrics, candidates, config);
        for peer in dedup(&req.current) {
            if view.health(peer, grace_ms) == Health::Graced
                && !alloc.peers.iter().any(|p| p == peer)
            {
                alloc.peers.push(peer.to_owned());
            }
        }
    }
    Ok((alloc.peers != req.current).then_some(alloc))
}

/// What every allocation decision can see of one member peer at an
/// instant: up or not, within its grace period, whether it may take new
/// pins, and its usable tags. Two rounds that see the same states for the
/// same members decide the same for a pin whose record did not change
/// (only the choice among candidates, which happens after a pin's
/// decision changed, reads metric values), so the leader re-examines
/// every pin only when these change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerState {
    alive: bool,
    graced: bool,
    takes_new: bool,
    tags: Vec<(String, String)>,
}

/// The [`PeerState`] of every member, by peer id.
pub fn peer_states(
    metrics: &PeerMetrics,
    members: &[String],
    config: &AllocatorConfig,
    now_ms: i64,
    grace_ms: i64,
) -> BTreeMap<String, PeerState> {
    let no_tags = BTreeMap::new();
    let view = View {
        metrics,
        members: members.iter().map(String::as_str).collect(),
        allocate_by: &config.allocate_by,
        tags: &no_tags,
        now_ms,
    };
    members
        .iter()
        .map(|peer| {
            let tags = view
                .all(peer)
                .filter(|m| m.is_usable(now_ms))
                .filter_map(|m| {
                    let key = m.name.strip_prefix(TAG_PREFIX)?;
                    Some((key.to_owned(), m.value.clone()))
                })
                .collect();
            let state = PeerState {
                alive: view.alive(peer),
                graced: view.health(peer, grace_ms) == Health::Graced,
                takes_new: view.can_take_new(peer),
                tags,
            };
            (peer.clone(), state)
        })
        .collect()
}

/// Replication factors after defaults and validation.
#[derive(Clone, Copy, Debug)]
struct Factors {
    /// Fewest peers (0 for every-peer pins).
    needed: usize,
    /// Most peers; `None`: every available peer.
    wanted: Option<usize>,
}

impl Factors {
    fn resolve(req: &AllocationRequest, config: &AllocatorConfig) -> Result<Self, AllocError> {
        let pick = |n: i32, default: i32| if n == 0 { default } else { n };
        let min = pick(req.replication_min, config.default_min);
        let max = pick(req.replication_max, config.default_max);
        let invalid = AllocError::InvalidReplication { min, max };
        let count = |n: i32| usize::try_from(n).ok().filter(|n| *n >= 1);
        match (min, max) {
            (-1, -1) => Ok(Self {
                needed: 0,
                wanted: None,
            }),
            (min, -1) => Ok(Self {
                needed: count(min).ok_or(invalid)?,
                wanted: None,
            }),
            (min, max) => match (count(min), count(max)) {
                (Some(needed), Some(wanted)) if needed <= wanted => Ok(Self {
                    needed,
                    wanted: Some(wanted),
                }),
                _ => Err(invalid),
            },
        }
    }
}

/// How an allocated peer looks from the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Live,
    Graced,
    Gone,
    Misplaced,
}

/// The metrics, members and constraints one request is judged against.
struct View<'a> {
    metrics: &'a PeerMetrics,
    members: BTreeSet<&'a str>,
    allocate_by: &'a [String],
    tags: &'a BTreeMap<String, String>,
    now_ms: i64,
}

impl<'a> View<'a> {
    fn new(
        req: &'a AllocationRequest,
        metrics: &'a PeerMetrics,
        candidates: &'a [String],
        config: &'a AllocatorConfig,
    ) -> Self {
        Self {
            metrics,
            members: candidates.iter().map(String::as_str).collect(),
            allocate_by: &config.allocate_by,
            tags: &req.allocate_tags,
            now_ms: req.now_ms,
        }
    }

    fn usable(&self, peer: &str, name: &str) -> Option<&'a Metric> {
        self.metrics
            .get(peer, name)
            .filter(|m| m.is_usable(self.now_ms))
    }

    fn all(&self, peer: &str) -> impl Iterator<Item = &'a Metric> + use<'a> {
        self.metrics.peer(peer).into_iter().flat_map(|m| m.values())
    }

    /// Reporting: some metric has not expired (even an invalid one — the
    /// peer is up, its IPFS may be unhealthy).
    fn alive(&self, peer: &str) -> bool {
        self.all(peer).any(|m| !m.is_expired(self.now_ms))
    }

    fn fits(&self, peer: &str) -> bool {
        self.tags.iter().all(|(k, v)| {
            self.usable(peer, &format!("{TAG_PREFIX}{k}"))
                .is_some_and(|m| m.value == *v)
        })
    }

    /// May keep an allocation it has.
    fn can_keep(&self, peer: &str) -> bool {
        self.members.contains(peer) && self.alive(peer) && self.fits(peer)
    }

    /// May receive a new allocation: can keep one, reports at least one
    /// valid metric, and no metric the allocator orders by is reported
    /// invalid (IPFS Cluster's disk informer says "full" that way).
    fn can_take_new(&self, peer: &str) -> bool {
        self.can_keep(peer)
            && self.all(peer).any(|m| m.is_usable(self.now_ms))
            && !self.allocate_by.iter().any(|name| {
                self.metrics
                    .get(peer, name)
                    .is_some_and(|m| !m.valid && !m.is_expired(self.now_ms))
            })
    }

    fn health(&self, peer: &str, grace_ms: i64) -> Health {
        if !self.members.contains(peer) {
            return Health::Misplaced;
        }
        if self.alive(peer) {
            return if self.fits(peer) {
                Health::Live
            } else {
                Health::Misplaced
            };
        }
        let last = self.all(peer).map(|m| m.expire_ms).max();
        match last {
            Some(t) if self.now_ms.saturating_sub(t) <= grace_ms => Health::Graced,
            _ => Health::Gone,
        }
    }
}

/// First occurrences, in order.
fn dedup(peers: &[String]) -> impl Iterator<Item = &str> {
    let mut seen = BTreeSet::new();
    peers
        .iter()
        .map(String::as_str)
        .filter(move |p| seen.insert(*p))
}

/// The outcome of `choose`.
struct Chosen<'a> {
    /// Current peers kept, in their recorded order.
    kept: Vec<&'a str>,
    /// New peers, in the order they were chosen.
    added: Vec<&'a str>,
}

fn choose<'a>(
    req: &'a AllocationRequest,
    view: &View<'a>,
    factors: Factors,
) -> Result<Chosen<'a>, AllocError> {
    let priority: BTreeSet<&str> = req.user_allocations.iter().map(String::as_str).collect();
    let keepable: Vec<&'a str> = dedup(&req.current).filter(|p| view.can_keep(p)).collect();
    let kept_set: BTreeSet<&str> = keepable.iter().copied().collect();
    let fresh: Vec<&'a str> = view
        .members
        .iter()
        .copied()
        .filter(|p| !kept_set.contains(p) && view.can_take_new(p))
        .collect();
    let available = keepable.len() + fresh.len();
    if available < factors.needed {
        return Err(AllocError::NotEnoughPeers {
            needed: factors.needed,
            available,
        });
    }

    let usable = |peer: &str, name: &str| view.usable(peer, name);
    let by = view.allocate_by;
    let split = |peers: &[&'a str]| -> (Vec<&'a str>, Vec<&'a str>) {
        peers.iter().partition(|p| priority.contains(*p))
    };

    match factors.wanted {
        Some(max) if keepable.len() >= max => {
            // Keep the best `max`: the user's peers first, then balanced.
            let (first, others) = split(&keepable);
            let mut best = balanced::select(&first, max, &[], by, &usable);
            let more = balanced::select(&others, max - best.len(), &best, by, &usable);
            best.extend(more);
            let best: BTreeSet<&str> = best.into_iter().collect();
            Ok(Chosen {
                kept: keepable.into_iter().filter(|p| best.contains(p)).collect(),
                added: Vec::new(),
            })
        }
        wanted => {
            let slots = wanted.map_or(usize::MAX, |max| max - keepable.len());
            let (first, others) = split(&fresh);
            let mut added = balanced::select(&first, slots, &keepable, by, &usable);
            let seeds: Vec<&'a str> = keepable.iter().chain(&added).copied().collect();
            let more = balanced::select(&others, slots - added.len(), &seeds, by, &usable);
            added.extend(more);
            Ok(Chosen {
                kept: keepable,
                added,
            })
        }
    }
}

impl Chosen<'_> {
    fn in_output_order(&self, req: &AllocationRequest) -> Vec<String> {
        let chosen: BTreeSet<&str> = self.kept.iter().chain(&self.added).copied().collect();
        let priority: BTreeSet<&str> = req.user_allocations.iter().map(String::as_str).collect();
        dedup(&req.user_allocations)
            .filter(|p| chosen.contains(p))
            .chain(
                self.kept
                    .iter()
                    .chain(&self.added)
                    .copied()
                    .filter(|p| !priority.contains(p)),
            )
            .map(str::to_owned)
            .collect()
    }
}
