//! `--wait` of `pin add|rm|update` and `add`: follows one CID's status
//! across the cluster until enough peers reached the wanted state, with a
//! progress bar on a terminal (ipfs-cluster-ctl's `--wait`, `--wait-limit`,
//! `--wait-timeout`).
//!
//! It only reads statuses (`GET /pins/{cid}`); it must not write.

use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pinfleet::client::{Client, ClientError};
use pinfleet::wire::{GlobalPinInfo, PinInfoShort, PinRecord, TrackerStatus};

/// How often the status is read while waiting.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// The `--wait` options.
#[derive(Clone, Debug, Default, Args)]
pub struct WaitArgs {
    /// Wait until the change is done: a pin pinned on as many peers as its
    /// minimum replication (every allocated peer for -1), an unpin unpinned
    /// everywhere. Exit 1 when a peer reports an error or --wait-timeout
    /// passes.
    #[arg(long)]
    pub wait: bool,
    /// How many peers must reach the status to end the wait (default: as
    /// above).
    #[arg(long, value_name = "N", requires = "wait")]
    pub wait_limit: Option<usize>,
    /// Give up waiting after this long (seconds, or e.g. 90s, 5m); default:
    /// wait as long as it takes.
    #[arg(long, value_name = "DURATION", requires = "wait", value_parser = super::remote::parse_timeout)]
    pub wait_timeout: Option<Duration>,
}

/// The state a wait ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Pinned on enough peers.
    Pinned,
    /// Unpinned everywhere (or gone from the state).
    Unpinned,
}

/// How a wait ended.
#[derive(Debug)]
pub enum Waited {
    /// Enough peers got there; the last status read (none when the pin
    /// left the state).
    Done(Option<GlobalPinInfo>),
    /// A peer reported an error; the status that shows it.
    Failed(GlobalPinInfo),
    /// --wait-timeout passed; the last status read.
    TimedOut(Option<GlobalPinInfo>),
}

/// How many peers must reach `goal` for `pin` (the write's answer), given
/// `limit` (--wait-limit), out of the peers `info` lists.
fn needed(
    goal: Goal,
    limit: Option<usize>,
    pin: Option<&PinRecord>,
    info: &GlobalPinInfo,
) -> usize {
    if let Some(n) = limit.filter(|n| *n > 0) {
        return n;
    }
    let members = info.peer_map.len();
    match (goal, pin) {
        (Goal::Pinned, Some(p)) if p.replication_factor_min > 0 => {
            usize::try_from(p.replication_factor_min).map_or(members, |n| n.min(members.max(1)))
        }
        // Everywhere (-1): every peer the pin is not remote on.
        (Goal::Pinned, _) => info
            .peer_map
            .values()
            .filter(|p| p.status != TrackerStatus::Remote)
            .count()
            .max(1),
        (Goal::Unpinned, _) => members.max(1),
    }
}

/// How many peers of `info` reached `goal`.
fn reached(goal: Goal, info: &GlobalPinInfo) -> usize {
    info.peer_map
        .values()
        .filter(|p| match goal {
            Goal::Pinned => p.status == TrackerStatus::Pinned,
            Goal::Unpinned => matches!(p.status, TrackerStatus::Unpinned | TrackerStatus::Remote),
        })
        .count()
}

/// Whether peer status `p` is an error of the operation `goal` waits on.
fn peer_failed(goal: Goal, p: &PinInfoShort) -> bool {
    match goal {
        Goal::Pinned => matches!(
            p.status,
            TrackerStatus::PinError | TrackerStatus::ClusterError
        ),
        Goal::Unpinned => matches!(
            p.status,
            TrackerStatus::UnpinError | TrackerStatus::ClusterError
        ),
    }
}

/// Whether a peer of `info` reports an error for the operation `goal`
/// waits on.
fn failed(goal: Goal, info: &GlobalPinInfo) -> bool {
    info.peer_map.values().any(|p| peer_failed(goal, p))
}

/// Reads `cid`'s status until `goal` is reached by enough peers (see
/// [`WaitArgs`]), a peer fails, or the timeout passes. `pin` is the
/// write's answer (its minimum replication sets the default count).
pub async fn wait_for(
    client: &Client,
    cid: &str,
    goal: Goal,
    pin: Option<&PinRecord>,
    args: &WaitArgs,
) -> Result<Waited, ClientError> {
    let started = Instant::now();
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} peers ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let verb = match goal {
        Goal::Pinned => "pinning",
        Goal::Unpinned => "unpinning",
    };
    bar.set_message(format!("{verb} {cid}"));
    let mut last: Option<GlobalPinInfo>;
    let outcome = loop {
        match client.status(cid).await {
            Ok(info) => {
                let need = needed(goal, args.wait_limit, pin, &info);
                let got = reached(goal, &info);
                bar.set_length(need as u64);
                bar.set_position(got.min(need) as u64);
                if got >= need {
                    break Waited::Done(Some(info));
                }
                if failed(goal, &info) {
                    break Waited::Failed(info);
                }
                last = Some(info);
            }
            // Gone from the state: nothing is pinned any more.
            Err(ClientError::Api { status: 404, .. }) if goal == Goal::Unpinned => {
                break Waited::Done(None);
            }
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        }
        if args.wait_timeout.is_some_and(|t| started.elapsed() >= t) {
            break Waited::TimedOut(last);
        }
        bar.tick();
        tokio::time::sleep(POLL_EVERY).await;
    };
    bar.finish_and_clear();
    Ok(outcome)
}

/// One line for a wait that did not end well, naming what was reached and
/// the first error reported.
pub fn explain(goal: Goal, waited: &Waited, timeout: Option<Duration>) -> Option<String> {
    let status = |info: &GlobalPinInfo| {
        let verb = match goal {
            Goal::Pinned => "pinned",
            Goal::Unpinned => "unpinned",
        };
        format!(
            "{} of {} peers {verb}",
            reached(goal, info),
            info.peer_map.len()
        )
    };
    match waited {
        Waited::Done(_) => None,
        Waited::Failed(info) => {
            let first = info
                .peer_map
                .iter()
                .find(|(_, p)| peer_failed(goal, p))
                .map(|(peer, p)| format!("{peer}: {} {}", p.status.as_str(), p.error));
            Some(format!(
                "{}: a peer failed ({}): {}",
                info.cid,
                status(info),
                first.unwrap_or_default().trim_end()
            ))
        }
        Waited::TimedOut(info) => {
            let after = timeout.map(|t| format!(" after {t:?}")).unwrap_or_default();
            let so_far = info.as_ref().map(status).unwrap_or_default();
            Some(format!("timed out{after}: {so_far}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn info(statuses: &[TrackerStatus]) -> GlobalPinInfo {
        let peer_map = statuses
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p: PinInfoShort = serde_json::from_value(serde_json::json!({
                    "peername": format!("p{i}"),
                    "status": s.as_str(),
                    "timestamp": "2026-01-01T00:00:00Z",
                    "error": if s.as_str().ends_with("error") { "boom" } else { "" },
                }))
                .unwrap();
                (format!("peer{i}"), p)
            })
            .collect::<BTreeMap<_, _>>();
        GlobalPinInfo {
            cid: "bafy".into(),
            name: String::new(),
            allocations: Vec::new(),
            origins: Vec::new(),
            created: String::new(),
            metadata: BTreeMap::new(),
            peer_map,
        }
    }

    fn pin(min: i32) -> PinRecord {
        serde_json::from_value(serde_json::json!({
            "cid": "bafy", "replication_factor_min": min, "replication_factor_max": min,
        }))
        .unwrap()
    }

    use TrackerStatus::{PinError, PinQueued, Pinned, Remote, Unpinned, Unpinning};

    #[test]
    fn a_pin_waits_for_its_minimum_replication_or_the_limit() {
        let i = info(&[Pinned, PinQueued, Remote]);
        assert_eq!(needed(Goal::Pinned, None, Some(&pin(2)), &i), 2);
        assert_eq!(reached(Goal::Pinned, &i), 1);
        assert_eq!(needed(Goal::Pinned, Some(1), Some(&pin(2)), &i), 1);
        // Everywhere: every peer it is not remote on.
        assert_eq!(needed(Goal::Pinned, None, Some(&pin(-1)), &i), 2);
        // More than there are peers: as many as there are.
        assert_eq!(needed(Goal::Pinned, None, Some(&pin(5)), &i), 3);
    }

    #[test]
    fn an_unpin_waits_for_every_peer() {
        let i = info(&[Unpinned, Unpinning, Remote]);
        assert_eq!(needed(Goal::Unpinned, None, None, &i), 3);
        assert_eq!(reached(Goal::Unpinned, &i), 2);
    }

    #[test]
    fn errors_of_the_awaited_operation_end_the_wait() {
        let i = info(&[Pinned, PinError]);
        assert!(failed(Goal::Pinned, &i));
        assert!(!failed(Goal::Unpinned, &i));
        let why = explain(Goal::Pinned, &Waited::Failed(i), None).unwrap();
        assert!(why.contains("1 of 2 peers pinned"), "{why}");
        assert!(why.contains("peer1: pin_error boom"), "{why}");
    }
}
