//! The update policy (Keel OEM properties of the UpdateService): a channel, how often to look for
//! updates, and where — a signed index file. A check downloads the index and its detached CMS
//! signature (`<index>.sig`, verified against the update CA like a bundle manifest), picks the
//! newest version of the channel for this architecture that is newer than the running one and not
//! already written, and downloads and stages it (`OnStartUpdateRequest`: it waits for
//! `UpdateService.StartUpdate`).
//!
//! The index: `{"Updates": [{"Version": "1.2.0", "Channel": "stable", "Architecture": "x86-64",
//! "URI": "keel_1.2.0.keel"}]}`; a relative `URI` is resolved against the index's own URI.
//! Sign it with `openssl cms -sign -binary -in index.json -signer cert.pem -inkey key.pem
//! -outform DER -out index.json.sig`.

use crate::slots::boot::vercmp;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

pub const CHANNELS: &[&str] = &["stable", "testing"];
/// Six hours, the default check interval.
pub const DEFAULT_INTERVAL: u64 = 6 * 3600;
/// The largest index accepted.
const MAX_INDEX: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub channel: String,
    /// Seconds between checks; 0: never (only `CheckForUpdates`).
    pub interval: u64,
    pub index_uri: Option<String>,
    pub last_check: Option<DateTime<Utc>>,
    pub last_result: Option<String>,
    pub available: Option<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { channel: "stable".into(), interval: DEFAULT_INTERVAL, index_uri: None, last_check: None, last_result: None, available: None }
    }
}

impl Policy {
    /// Whether a periodic check is due at `now`.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        self.interval > 0 && self.index_uri.is_some() && self.last_check.map_or(true, |t| now.signed_duration_since(t).num_seconds() >= self.interval as i64)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entry {
    pub version: String,
    pub channel: String,
    pub architecture: String,
    #[serde(rename = "URI")]
    pub uri: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Index {
    updates: Vec<Entry>,
}

/// Parse the index and pick what to install: the newest entry of `channel` for `arch` newer than
/// `running`.
pub fn pick(index: &[u8], channel: &str, arch: &str, running: &str) -> Result<Option<Entry>, String> {
    let idx: Index = serde_json::from_slice(index).map_err(|e| format!("the update index is not valid: {e}"))?;
    Ok(idx
        .updates
        .into_iter()
        .filter(|e| e.channel == channel && e.architecture == arch && crate::slots::boot::valid_version(&e.version))
        .filter(|e| vercmp(&e.version, running) == Ordering::Greater)
        .max_by(|a, b| vercmp(&a.version, &b.version)))
}

/// `uri` relative to `base` (the index's URI): absolute URIs stay, others replace the last segment.
pub fn resolve(base: &str, uri: &str) -> String {
    if uri.contains("://") {
        return uri.to_string();
    }
    if let Some(rest) = uri.strip_prefix('/') {
        // Absolute path: keep scheme and authority.
        if let Some((scheme, after)) = base.split_once("://") {
            let authority = after.split('/').next().unwrap_or(after);
            return format!("{scheme}://{authority}/{rest}");
        }
    }
    match base.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{uri}"),
        None => uri.to_string(),
    }
}

/// Download `url` whole (an index or its signature), at most `MAX_INDEX` bytes.
pub async fn fetch_small(url: &str) -> Result<Vec<u8>, String> {
    let client = awc::Client::builder().timeout(std::time::Duration::from_secs(30)).finish();
    let mut resp = client.get(url).send().await.map_err(|e| format!("cannot fetch {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("fetching {url} answered HTTP {}", resp.status()));
    }
    let body = resp.body().limit(MAX_INDEX).await.map_err(|e| format!("reading {url}: {e}"))?;
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"{"Updates": [
        {"Version": "1.1.0", "Channel": "stable", "Architecture": "x86-64", "URI": "keel_1.1.0.keel"},
        {"Version": "1.3.0~rc1", "Channel": "testing", "Architecture": "x86-64", "URI": "t/keel_1.3.0~rc1.keel"},
        {"Version": "1.2.0", "Channel": "stable", "Architecture": "x86-64", "URI": "/b/keel_1.2.0.keel"},
        {"Version": "9.0", "Channel": "stable", "Architecture": "arm64", "URI": "keel_9.0.keel"},
        {"Version": "0.9", "Channel": "stable", "Architecture": "x86-64", "URI": "old.keel"}]}"#;

    #[test]
    fn picks_the_newest_of_the_channel_for_this_architecture() {
        assert_eq!(pick(INDEX.as_bytes(), "stable", "x86-64", "1.0").unwrap().unwrap().version, "1.2.0");
        assert_eq!(pick(INDEX.as_bytes(), "testing", "x86-64", "1.0").unwrap().unwrap().version, "1.3.0~rc1");
        assert_eq!(pick(INDEX.as_bytes(), "stable", "x86-64", "1.2.0").unwrap(), None, "nothing newer");
        assert!(pick(b"{\"Updates\": 3}", "stable", "x86-64", "1.0").is_err());
    }

    #[test]
    fn relative_uris_resolve_against_the_index() {
        let base = "http://10.0.2.2:8080/keel/index.json";
        assert_eq!(resolve(base, "keel_1.1.0.keel"), "http://10.0.2.2:8080/keel/keel_1.1.0.keel");
        assert_eq!(resolve(base, "/b/keel_1.2.0.keel"), "http://10.0.2.2:8080/b/keel_1.2.0.keel");
        assert_eq!(resolve(base, "https://cdn.example/x.keel"), "https://cdn.example/x.keel");
    }

    #[test]
    fn checks_are_due_by_interval_and_never_without_an_index() {
        let now: DateTime<Utc> = "2026-11-22T12:00:00Z".parse().unwrap();
        let mut p = Policy::default();
        assert!(!p.due(now), "no index URI");
        p.index_uri = Some("http://x/index.json".into());
        assert!(p.due(now), "never checked");
        p.last_check = Some(now - chrono::Duration::seconds(3600));
        assert!(!p.due(now));
        p.last_check = Some(now - chrono::Duration::seconds(DEFAULT_INTERVAL as i64));
        assert!(p.due(now));
        p.interval = 0;
        assert!(!p.due(now), "0 is never");
    }
}
