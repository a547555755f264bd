//! The testbed's live summary on the terminal: peers up, the leader, pins
//! in the shared state and their allocations by status, read from every
//! peer's `GET /metrics` once a second.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Status buckets in display order (the `status` label of
/// `pinfleet_local_pins`).
const BUCKETS: [&str; 5] = ["pinned", "pinning", "queued", "error", "unpinned"];

/// One reading of the whole testbed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Peers whose API answered.
    pub up: usize,
    /// Peers in the testbed.
    pub peers: usize,
    /// Index of the peer that reports being the leader.
    pub leader: Option<usize>,
    /// Pins in the shared state (as the leader, or the first peer up, sees).
    pub pins: u64,
    /// Allocations by status, summed over peers, in [`BUCKETS`] order.
    pub by_status: [u64; 5],
    /// Every peer that answered sees the same number of pins (none lags
    /// behind the leader's log).
    pub agreed: bool,
}

impl Summary {
    /// One line: `peers 3/3 · leader peer-0 · 7 pins · pinned 21 · …`.
    pub fn line(&self) -> String {
        let leader = self
            .leader
            .map_or_else(|| "none".to_string(), |i| format!("peer-{i}"));
        let mut s = format!(
            "peers {}/{} · leader {leader} · {} pins",
            self.up, self.peers, self.pins
        );
        for (name, n) in BUCKETS.iter().zip(self.by_status) {
            if n > 0 || *name != "unpinned" {
                s.push_str(&format!(" · {name} {n}"));
            }
        }
        s
    }

    /// Every peer is up and has applied the same pins, there are pins, and
    /// every allocation is pinned.
    pub fn all_pinned(&self) -> bool {
        self.up == self.peers
            && self.agreed
            && self.pins > 0
            && self.by_status[1..].iter().all(|n| *n == 0)
    }
}

/// The value of the sample `name` (exact, labels included) in an
/// OpenMetrics text body.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.starts_with(' ')
            .then(|| rest.trim().parse().ok())
            .flatten()
    })
}

/// Reads every peer's metrics, as `auth` (`user:password`) when given.
pub async fn read(http: &reqwest::Client, apis: &[String], auth: Option<&str>) -> Summary {
    let mut s = Summary {
        peers: apis.len(),
        agreed: true,
        ..Summary::default()
    };
    let mut seen: Option<f64> = None;
    for (i, api) in apis.iter().enumerate() {
        let mut request = http.get(format!("{api}/metrics"));
        if let Some((user, password)) = auth.and_then(|a| a.split_once(':')) {
            request = request.basic_auth(user, Some(password));
        }
        let body = match request.send().await {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            _ => None,
        };
        let Some(body) = body else { continue };
        s.up += 1;
        let leader = sample(&body, "pinfleet_leader") == Some(1.0);
        if leader {
            s.leader = Some(i);
        }
        let pins = sample(&body, "pinfleet_pins").unwrap_or(0.0);
        if seen.is_some_and(|p| p != pins) {
            s.agreed = false;
        }
        seen = Some(pins);
        if leader || s.up == 1 {
            // Float to count: metrics are integers written as such.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            {
                s.pins = pins as u64;
            }
        }
        for (slot, name) in s.by_status.iter_mut().zip(BUCKETS) {
            let v = sample(&body, &format!("pinfleet_local_pins{{status=\"{name}\"}}"));
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            {
                *slot += v.unwrap_or(0.0) as u64;
            }
        }
    }
    s
}

/// How watching ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Every allocation is pinned (only when asked to stop there).
    AllPinned(Summary),
    /// The wait's deadline passed first.
    TimedOut(Summary),
    /// Ctrl-C.
    Cancelled,
}

/// Shows the summary once a second until `cancel`, or, with `until`, until
/// every allocation is pinned or `until` passes. On a terminal the line is
/// rewritten in place; otherwise a line is printed each time it changes.
pub async fn watch(
    apis: &[String],
    auth: Option<&str>,
    until: Option<Duration>,
    cancel: &CancellationToken,
) -> Ended {
    let http = pinfleet::tls::client(None)
        .ok()
        .and_then(|b| b.timeout(Duration::from_secs(5)).build().ok())
        .unwrap_or_default();
    let tty = std::io::stdout().is_terminal();
    let deadline = until.map(|d| tokio::time::Instant::now() + d);
    let mut last = String::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let end = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ended::Cancelled,
            _ = tick.tick() => {}
        }
        let s = read(&http, apis, auth).await;
        let line = s.line();
        if tty {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().flush();
        } else if line != last {
            println!("{line}");
        }
        last = line;
        if deadline.is_some() && s.all_pinned() {
            break Ended::AllPinned(s);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break Ended::TimedOut(s);
        }
    };
    if tty {
        println!();
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_matched_exactly_and_summaries_read_well() {
        let body = "# HELP pinfleet_pins Pins\npinfleet_pins 7\npinfleet_pins_other 9\n\
                    pinfleet_local_pins{status=\"pinned\"} 3\n# EOF\n";
        assert_eq!(sample(body, "pinfleet_pins"), Some(7.0));
        assert_eq!(
            sample(body, "pinfleet_local_pins{status=\"pinned\"}"),
            Some(3.0)
        );
        assert_eq!(sample(body, "pinfleet_leader"), None);
        let mut s = Summary {
            up: 3,
            peers: 3,
            leader: Some(1),
            pins: 7,
            by_status: [21, 0, 0, 0, 0],
            agreed: true,
        };
        assert_eq!(
            s.line(),
            "peers 3/3 · leader peer-1 · 7 pins · pinned 21 · pinning 0 · queued 0 · error 0"
        );
        assert!(s.all_pinned());
        s.by_status[3] = 1;
        assert!(!s.all_pinned());
        s.by_status[3] = 0;
        s.agreed = false;
        assert!(!s.all_pinned(), "a peer behind the log is not settled");
        s.agreed = true;
        s.up = 2;
        assert!(!s.all_pinned(), "a peer down is not settled");
    }
}
