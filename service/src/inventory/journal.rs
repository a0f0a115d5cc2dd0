//! The systemd journal as Redfish log entries: the newest entries, read with
//! `journalctl -o json` through the host root and kept for a moment, so that paging and `$filter`
//! over a collection do not run journalctl once per entry.

use crate::host::Host;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The most entries the LogService shows (newest first).
pub const MAX_ENTRIES: usize = 1000;
const FRESH_FOR: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Stable and URI-safe: derived from the journal cursor.
    pub id: String,
    pub message: String,
    /// Redfish Severity: OK, Warning or Critical.
    pub severity: &'static str,
    /// syslog priority 0-7.
    pub priority: u8,
    pub created: String,
    pub source: Option<String>,
}

/// syslog priorities: emerg..err are Critical, warning is Warning, the rest OK.
pub fn severity(priority: u8) -> &'static str {
    match priority {
        0..=3 => "Critical",
        4 => "Warning",
        _ => "OK",
    }
}

/// MESSAGE may be a string, or an array of bytes when it is not valid UTF-8.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => Some(String::from_utf8_lossy(&a.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect::<Vec<_>>()).into_owned()),
        _ => None,
    }
}

/// Parse `journalctl -o json` output (one JSON object per line); malformed lines are skipped.
pub fn parse(out: &str) -> Vec<Entry> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|j| {
            let cursor = j.get("__CURSOR")?.as_str()?;
            let us: i64 = j.get("__REALTIME_TIMESTAMP")?.as_str()?.parse().ok()?;
            let created = chrono::DateTime::from_timestamp(us / 1_000_000, ((us % 1_000_000) * 1000) as u32)?
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let priority = j.get("PRIORITY").and_then(Value::as_str).and_then(|p| p.parse().ok()).unwrap_or(6u8).min(7);
            let digest = Sha256::digest(cursor.as_bytes());
            Some(Entry {
                id: digest[..8].iter().map(|b| format!("{b:02x}")).collect(),
                message: j.get("MESSAGE").and_then(text).unwrap_or_default(),
                severity: severity(priority),
                priority,
                created,
                source: j.get("SYSLOG_IDENTIFIER").or_else(|| j.get("_SYSTEMD_UNIT")).and_then(Value::as_str).map(str::to_string),
            })
        })
        .collect()
}

#[derive(Default)]
pub struct Journal {
    cache: Mutex<Option<(Instant, Arc<Vec<Entry>>)>>,
}

impl Journal {
    /// The newest entries, newest first (read again when older than a moment).
    pub fn entries(&self, host: &Host) -> Arc<Vec<Entry>> {
        let mut c = self.cache.lock().unwrap();
        if let Some((at, e)) = c.as_ref() {
            if at.elapsed() < FRESH_FOR {
                return e.clone();
            }
        }
        let n = MAX_ENTRIES.to_string();
        let out = host.run("journalctl", &["-o", "json", "-r", "-n", &n, "--no-pager"]);
        let e = Arc::new(if out.status == 0 { parse(&out.stdout) } else { vec![] });
        *c = Some((Instant::now(), e.clone()));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_journal_json() {
        let out = concat!(
            r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1763836800123456","PRIORITY":"3","SYSLOG_IDENTIFIER":"kernel","MESSAGE":"nvme0: I/O error"}"#,
            "\n",
            "garbage line\n",
            r#"{"__CURSOR":"s=1;i=3","__REALTIME_TIMESTAMP":"1763836801000000","PRIORITY":"6","_SYSTEMD_UNIT":"keeld.service","MESSAGE":[104,105,255]}"#,
            "\n"
        );
        let e = parse(out);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].severity, e[0].priority, e[0].source.as_deref()), ("Critical", 3, Some("kernel")));
        assert_eq!(e[0].created, "2025-11-22T18:40:00Z");
        assert_eq!(e[1].message, "hi\u{fffd}");
        assert_eq!(e[1].severity, "OK");
        assert_ne!(e[0].id, e[1].id);
        assert_eq!(e[0].id.len(), 16);
    }
}
