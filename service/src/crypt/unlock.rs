//! How this boot opened a volume, as systemd recorded it.
//!
//! systemd-cryptsetup leaves no file saying which credential opened a volume; what it leaves is its
//! unit's journal for the boot (the initrd's part is carried into the system journal). When the
//! TPM2 token cannot unseal the key (PCRs changed, TPM cleared, another TPM) it logs
//! "… falling back to traditional unlocking" and asks for a passphrase: on a Keel host that is a
//! recovery key. When the token works, the unit finishes without that line. IncusOS makes the same
//! decision from the same line (its initrd records it in an EFI variable); keeld reads the journal
//! itself, through the host root, so a recorded machine replays it:
//! `journalctl -b -o json -u systemd-cryptsetup@<volume>.service`.

use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum UnlockedBy {
    /// The TPM2 token unsealed the key.
    TPM,
    /// A passphrase was typed: the TPM could not open the volume, or it has no TPM2 slot.
    RecoveryKey,
    /// No record of this boot opening the volume (a simulated volume, a machine that is not a
    /// Keel host, a volume still locked).
    Unknown,
}

impl UnlockedBy {
    pub fn name(self) -> &'static str {
        match self {
            UnlockedBy::TPM => "TPM",
            UnlockedBy::RecoveryKey => "RecoveryKey",
            UnlockedBy::Unknown => "Unknown",
        }
    }
}

/// The unit systemd-cryptsetup-generator makes for a crypttab volume (systemd-escape rules).
pub fn unit(volume: &str) -> String {
    let mut e = String::new();
    for (i, b) in volume.bytes().enumerate() {
        match b {
            b'/' => e.push('-'),
            b'.' if i == 0 => e.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => e.push(b as char),
            b => e.push_str(&format!("\\x{b:02x}")),
        }
    }
    format!("systemd-cryptsetup@{e}.service")
}

/// The journalctl command line that shows this boot's record of `volume`.
pub fn journal_args(unit: &str) -> [&str; 7] {
    ["-b", "-o", "json", "--no-pager", "-u", unit, "-q"]
}

/// Read the unit's journal (`journalctl -o json`) for this boot. `has_tpm2`: whether the volume's
/// header has a TPM2 token (a volume without one can only have been opened by a passphrase).
pub fn classify(journal: &str, has_tpm2: bool) -> UnlockedBy {
    let mut fell_back = false;
    let mut finished = false;
    for line in journal.lines() {
        let Ok(j) = serde_json::from_str::<Value>(line) else { continue };
        let msg = j.get("MESSAGE").and_then(Value::as_str).unwrap_or("");
        if msg.contains("falling back to traditional unlocking") {
            fell_back = true;
        }
        // PID 1's record of the unit's start job: JOB_RESULT=done, or its "Finished …" line.
        let job_done = j.get("JOB_TYPE").and_then(Value::as_str) == Some("start") && j.get("JOB_RESULT").and_then(Value::as_str) == Some("done");
        if job_done || msg.starts_with("Finished ") {
            finished = true;
        }
    }
    match (finished, fell_back, has_tpm2) {
        (false, _, _) => UnlockedBy::Unknown,
        (true, true, _) | (true, false, false) => UnlockedBy::RecoveryKey,
        (true, false, true) => UnlockedBy::TPM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(lines: &[&str]) -> String {
        lines.iter().map(|m| serde_json::json!({ "MESSAGE": m }).to_string() + "\n").collect()
    }

    #[test]
    fn units_are_escaped_like_systemd_escape() {
        assert_eq!(unit("root"), "systemd-cryptsetup@root.service");
        assert_eq!(unit("luks-data"), "systemd-cryptsetup@luks\\x2ddata.service");
        assert_eq!(unit("a.b_c"), "systemd-cryptsetup@a.b_c.service");
    }

    #[test]
    fn the_fallback_line_means_a_recovery_key_opened_it() {
        let start = "Starting systemd-cryptsetup@root.service - Cryptography Setup for root...";
        let done = "Finished systemd-cryptsetup@root.service - Cryptography Setup for root.";
        // systemd 252 and 257's words when the PCRs no longer match, or the TPM forgot its keys.
        let mismatch = j(&[start, "Automatically discovered security TPM2 token unlocks volume.", "Failed to unseal secret using TPM2: Operation not permitted",
            "No TPM2 metadata matching the current system state found in LUKS2 header, falling back to traditional unlocking.", done]);
        let cleared = j(&[start, "TPM2 operation failed, falling back to traditional unlocking: State not recoverable", done]);
        let opened = j(&[start, "Automatically discovered security TPM2 token unlocks volume.", done]);
        assert_eq!(classify(&mismatch, true), UnlockedBy::RecoveryKey);
        assert_eq!(classify(&cleared, true), UnlockedBy::RecoveryKey);
        assert_eq!(classify(&opened, true), UnlockedBy::TPM);
        assert_eq!(classify(&opened, false), UnlockedBy::RecoveryKey, "no TPM2 token: a passphrase opened it");
        // Started but never finished (still waiting for a key, or failed): nothing to say.
        assert_eq!(classify(&j(&[start, "TPM2 operation failed, falling back to traditional unlocking: State not recoverable"]), true), UnlockedBy::Unknown);
        assert_eq!(classify("", true), UnlockedBy::Unknown);
        assert_eq!(classify("-- No entries --\n", true), UnlockedBy::Unknown);
        let job = serde_json::json!({ "MESSAGE": "Cryptography Setup for root.", "JOB_TYPE": "start", "JOB_RESULT": "done" }).to_string();
        assert_eq!(classify(&job, true), UnlockedBy::TPM);
    }
}
