//! The optional commit-status reporter (issue 6 item 5): posts the outcome
//! of reconciling a commit to the forge, so the author sees it next to the
//! commit. Off by default; GitHub and Gitea/Forgejo APIs.
//!
//! State mapping (first match wins):
//!
//! | outcome                                                        | state     |
//! |----------------------------------------------------------------|-----------|
//! | a PinSet `ManifestInvalid`, `PruneGuard`, `ApplyFailed`         | `failure` |
//! | a PinSet `SourceUnavailable` or `ClusterUnavailable`, or a source error with no PinSet | `error` |
//! | a PinSet `Reconciling` / `Progressing`                          | `pending` |
//! | otherwise (healthy)                                            | `success` |
//!
//! Unavailability is reported as `error`, not `failure`: the commit is not
//! at fault. The description is at most 140 characters (GitHub's limit).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{ConditionType, PinSetOutcome, Reason, ReconcileOutcome};

/// The status context shown by the forge.
pub const CONTEXT: &str = "pinfleet";
/// Longest description sent, in characters.
pub const MAX_DESCRIPTION: usize = 140;

/// Which forge API to call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forge {
    /// `POST {api}/repos/{owner}/{repo}/statuses/{sha}`, `Authorization: Bearer`.
    GitHub,
    /// Gitea and Forgejo: `POST {api}/api/v1/repos/{owner}/{repo}/statuses/{sha}`,
    /// `Authorization: token`.
    Gitea,
}

/// A commit status state, as both forges spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Every PinSet is applied.
    Success,
    /// The commit cannot be applied as it is (invalid, guard, refused).
    Failure,
    /// Applying is under way.
    Pending,
    /// The source or the cluster was unavailable.
    Error,
}

/// Why a status could not be posted.
#[derive(Debug, thiserror::Error)]
pub enum ReporterError {
    /// `repo` is not `owner/name`.
    #[error("invalid repository {}: expected owner/name", crate::manifest::shown(.0))]
    BadRepo(String),
    /// The sha is not a hex commit id.
    #[error("invalid commit sha {}", crate::manifest::shown(.0))]
    BadSha(String),
    /// The HTTP client could not be built.
    #[error("cannot build the http client")]
    Client(#[source] reqwest::Error),
    /// The extra CA file could not be used.
    #[error("invalid tls settings")]
    Tls(#[source] crate::tls::TlsError),
    /// The forge could not be reached, or the request broke off.
    #[error("cannot reach the forge at {url}")]
    Unreachable {
        /// The URL posted to.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The forge answered with an error status.
    #[error("the forge answered http {status} for {url}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The URL posted to.
        url: String,
        /// The start of the answer's body.
        body: String,
    },
}

#[derive(Serialize)]
struct StatusBody<'a> {
    state: State,
    description: &'a str,
    context: &'a str,
}

/// Posts commit statuses to one repository of one forge.
#[derive(Clone)]
pub struct Reporter {
    kind: Forge,
    api_base: String,
    owner: String,
    name: String,
    token: String,
    http: reqwest::Client,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("kind", &self.kind)
            .field("api_base", &self.api_base)
            .field("repo", &format_args!("{}/{}", self.owner, self.name))
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Reporter {
    /// A reporter for `repo` (`owner/name`) at `api_base`
    /// (`https://api.github.com`, `https://codeberg.org`, or a local URL in
    /// tests), authenticating with `token`.
    pub fn new(
        kind: Forge,
        api_base: impl Into<String>,
        repo: &str,
        token: impl Into<String>,
    ) -> Result<Self, ReporterError> {
        Self::with_ca(kind, api_base, repo, token, None)
    }

    /// [`Reporter::new`], trusting the CA certificates in the PEM file
    /// `extra_ca` too (a self-hosted forge with a private CA).
    pub fn with_ca(
        kind: Forge,
        api_base: impl Into<String>,
        repo: &str,
        token: impl Into<String>,
        extra_ca: Option<&std::path::Path>,
    ) -> Result<Self, ReporterError> {
        let (owner, name) = repo
            .split_once('/')
            .filter(|(o, n)| valid_segment(o) && valid_segment(n))
            .ok_or_else(|| ReporterError::BadRepo(repo.to_string()))?;
        let http = crate::tls::client(extra_ca)
            .map_err(ReporterError::Tls)?
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("pinfleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ReporterError::Client)?;
        Ok(Self {
            kind,
            api_base: api_base.into().trim_end_matches('/').to_string(),
            owner: owner.to_string(),
            name: name.to_string(),
            token: token.into(),
            http,
        })
    }

    /// The URL a status for `sha` is posted to.
    pub fn status_url(&self, sha: &str) -> String {
        let prefix = match self.kind {
            Forge::GitHub => "",
            Forge::Gitea => "/api/v1",
        };
        format!(
            "{}{prefix}/repos/{}/{}/statuses/{sha}",
            self.api_base, self.owner, self.name
        )
    }

    /// Posts the state of `outcome` as the status of commit `sha`.
    pub async fn report(&self, sha: &str, outcome: &ReconcileOutcome) -> Result<(), ReporterError> {
        if !valid_sha(sha) {
            return Err(ReporterError::BadSha(sha.to_string()));
        }
        let (state, description) = status_of(outcome);
        let url = self.status_url(sha);
        let auth = match self.kind {
            Forge::GitHub => format!("Bearer {}", self.token),
            Forge::Gitea => format!("token {}", self.token),
        };
        let mut req = self
            .http
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&StatusBody {
                state,
                description: &description,
                context: CONTEXT,
            });
        if self.kind == Forge::GitHub {
            req = req.header("X-GitHub-Api-Version", "2022-11-28");
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ReporterError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(ReporterError::Status {
            status: status.as_u16(),
            url,
            body: truncate(body.trim(), 200),
        })
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_sha(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The commit id of a git revision `<ref>@sha1:<sha>` (or `@sha256:`);
/// `None` for other revisions (a directory's content digest).
pub fn sha_of_revision(rev: &str) -> Option<&str> {
    let (_, id) = rev.rsplit_once('@')?;
    let sha = id
        .strip_prefix("sha1:")
        .or_else(|| id.strip_prefix("sha256:"))?;
    valid_sha(sha).then_some(sha)
}

/// The state and description (at most [`MAX_DESCRIPTION`] characters)
/// `outcome` is reported as.
pub fn status_of(outcome: &ReconcileOutcome) -> (State, String) {
    let is = |reasons: &[Reason]| -> Option<&PinSetOutcome> {
        outcome
            .pinsets
            .iter()
            .find(|o| o.condition == ConditionType::Stalled && reasons.contains(&o.reason))
    };
    let (state, description) = if let Some(o) = is(&[
        Reason::ManifestInvalid,
        Reason::PruneGuard,
        Reason::ApplyFailed,
    ]) {
        (State::Failure, describe(o))
    } else if let Some(o) = is(&[Reason::SourceUnavailable, Reason::ClusterUnavailable]) {
        (State::Error, describe(o))
    } else if let Some(o) = outcome
        .pinsets
        .iter()
        .find(|o| o.condition == ConditionType::Stalled)
    {
        (State::Failure, describe(o))
    } else if let Some(e) = &outcome.source_error {
        (
            State::Error,
            format!("source failed: {}", e.replace('\n', "; ")),
        )
    } else if let Some(o) = outcome
        .pinsets
        .iter()
        .find(|o| o.condition == ConditionType::Reconciling || o.reason == Reason::Progressing)
    {
        (State::Pending, describe(o))
    } else {
        let (add, update, release) = outcome.pinsets.iter().fold((0, 0, 0), |(a, u, r), o| {
            (a + o.add, u + o.update, r + o.release)
        });
        let n = outcome.pinsets.len();
        let s = if n == 1 { "" } else { "s" };
        let d = if outcome.skipped {
            "applied (unchanged)".to_string()
        } else {
            format!("applied {n} PinSet{s}: +{add} ~{update} -{release}")
        };
        (State::Success, d)
    };
    (state, truncate(&description, MAX_DESCRIPTION))
}

fn describe(o: &PinSetOutcome) -> String {
    let mut d = format!("{}/{} {}", o.namespace, o.name, o.reason);
    if !o.message.is_empty() {
        d.push_str(": ");
        d.push_str(&o.message.replace('\n', "; "));
    }
    d
}

/// `s` cut to at most `max` characters, ending in `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_of_revision_parses_git_revisions() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(sha_of_revision(&format!("main@sha1:{sha}")), Some(sha));
        assert_eq!(
            sha_of_revision(&format!("refs/tags/v1@sha1:{sha}")),
            Some(sha)
        );
        assert_eq!(sha_of_revision("sha256:abcdef0123"), None);
        assert_eq!(sha_of_revision("main@sha1:"), None);
        assert_eq!(sha_of_revision("main@sha1:zz/../x"), None);
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééééé", 4).chars().count(), 4);
    }

    #[test]
    fn bad_repo_is_refused() {
        for r in ["owner", "owner/", "/name", "a/b/c", "../x"] {
            assert!(
                matches!(
                    Reporter::new(Forge::GitHub, "http://x", r, "t"),
                    Err(ReporterError::BadRepo(_))
                ),
                "{r}"
            );
        }
    }
}
