//! A LUKS2 header as `cryptsetup luksDump --dump-json-metadata` prints it, reduced to what keeld
//! shows and acts on: the key slots by kind (after the token that claims them) and the TPM2
//! binding of `systemd-tpm2` tokens. Salts, digests, sealed blobs and policy hashes are read past,
//! never kept: nothing here is key material.

use serde::Serialize;
use serde_json::Value;

/// What opens a key slot, as systemd-cryptenroll classifies it (by the token that claims it).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum SlotKind {
    /// A `systemd-tpm2` token: a secret sealed by the TPM against PCR values.
    TPM2,
    /// A `systemd-recovery` token: a recovery key systemd-cryptenroll generated (or keeld, for a
    /// second volume, enrolled the same way).
    RecoveryKey,
    /// A passphrase no token claims.
    Password,
    FIDO2,
    PKCS11,
    /// A token of another type.
    Other,
}

impl SlotKind {
    pub fn name(self) -> &'static str {
        match self {
            SlotKind::TPM2 => "TPM2",
            SlotKind::RecoveryKey => "RecoveryKey",
            SlotKind::Password => "Password",
            SlotKind::FIDO2 => "FIDO2",
            SlotKind::PKCS11 => "PKCS11",
            SlotKind::Other => "Other",
        }
    }
    /// Opened by something a person types (a recovery key or a passphrase).
    pub fn is_passphrase(self) -> bool {
        matches!(self, SlotKind::RecoveryKey | SlotKind::Password)
    }
}

/// The TPM2 binding of a `systemd-tpm2` token.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Tpm2 {
    /// PCRs whose current values the secret is sealed against.
    pub pcrs: Vec<u32>,
    /// The PCR bank (`sha256`…).
    pub bank: Option<String>,
    /// PCRs covered by a signed policy (`--tpm2-public-key`), e.g. 11 for the UKI.
    pub pubkey_pcrs: Vec<u32>,
    /// Whether a PIN is needed as well.
    pub pin: bool,
    /// Whether a systemd-pcrlock policy is used.
    pub pcrlock: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KeySlot {
    pub slot: u32,
    pub kind: SlotKind,
    /// The key derivation function (`argon2id`, `pbkdf2`).
    pub kdf: Option<String>,
    pub tpm2: Option<Tpm2>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Header {
    pub slots: Vec<KeySlot>,
    /// The data segment's cipher (`aes-xts-plain64`).
    pub cipher: Option<String>,
}

impl Header {
    pub fn slots_of(&self, kind: SlotKind) -> impl Iterator<Item = &KeySlot> {
        self.slots.iter().filter(move |s| s.kind == kind)
    }
    pub fn tpm2(&self) -> Option<&Tpm2> {
        self.slots.iter().find_map(|s| s.tpm2.as_ref())
    }
}

fn nums(v: Option<&Value>) -> Vec<u32> {
    let mut n: Vec<u32> = v.and_then(Value::as_array).map(|a| a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect()).unwrap_or_default();
    n.sort();
    n
}

/// Parse the JSON metadata of a LUKS2 header.
pub fn parse(json: &str) -> Result<Header, String> {
    let j: Value = serde_json::from_str(json).map_err(|e| format!("unreadable LUKS2 metadata: {e}"))?;
    let keyslots = j.get("keyslots").and_then(Value::as_object).ok_or("LUKS2 metadata without keyslots")?;
    let tokens = j.get("tokens").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut slots = vec![];
    for (num, ks) in keyslots {
        let Ok(slot) = num.parse::<u32>() else { continue };
        // The tokens that claim this slot; the first one systemd knows decides its kind.
        let claims: Vec<&Value> = tokens
            .values()
            .filter(|t| t.get("keyslots").and_then(Value::as_array).is_some_and(|a| a.iter().any(|k| k.as_str() == Some(num.as_str()))))
            .collect();
        let kind_of = |t: &Value| match t.get("type").and_then(Value::as_str) {
            Some("systemd-tpm2") => SlotKind::TPM2,
            Some("systemd-recovery") => SlotKind::RecoveryKey,
            Some("systemd-fido2") => SlotKind::FIDO2,
            Some("systemd-pkcs11") => SlotKind::PKCS11,
            _ => SlotKind::Other,
        };
        let kind = claims.iter().map(|t| kind_of(t)).find(|k| *k != SlotKind::Other).or_else(|| claims.first().map(|t| kind_of(t))).unwrap_or(SlotKind::Password);
        let tpm2 = claims.iter().find(|t| kind_of(t) == SlotKind::TPM2).map(|t| Tpm2 {
            pcrs: nums(t.get("tpm2-pcrs")),
            bank: t.get("tpm2-pcr-bank").and_then(Value::as_str).map(str::to_string),
            pubkey_pcrs: nums(t.get("tpm2_pubkey_pcrs").or_else(|| t.get("tpm2-pubkey-pcrs"))),
            pin: t.get("tpm2-pin").and_then(Value::as_bool).unwrap_or(false),
            pcrlock: t.get("tpm2_pcrlock").and_then(Value::as_bool).unwrap_or(false),
        });
        let kdf = ks.pointer("/kdf/type").and_then(Value::as_str).map(str::to_string);
        slots.push(KeySlot { slot, kind, kdf, tpm2 });
    }
    slots.sort_by_key(|s| s.slot);
    let cipher = j.pointer("/segments/0/encryption").and_then(Value::as_str).map(str::to_string);
    Ok(Header { slots, cipher })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like systemd 252/257's output on an image with a passphrase, a TPM2 token (PCR 7 and
    /// a signed PCR 11 policy) and a recovery key.
    const DUMP: &str = r#"{
      "keyslots": {
        "0": {"type": "luks2", "key_size": 64, "kdf": {"type": "argon2id", "time": 4, "memory": 1048576, "cpus": 2, "salt": "c2FsdA=="}},
        "1": {"type": "luks2", "key_size": 64, "kdf": {"type": "pbkdf2", "hash": "sha512", "iterations": 1000, "salt": "c2FsdA=="}},
        "2": {"type": "luks2", "key_size": 64, "kdf": {"type": "pbkdf2", "hash": "sha512", "iterations": 1000, "salt": "c2FsdA=="}},
        "10": {"type": "luks2", "key_size": 64, "kdf": {"type": "pbkdf2", "hash": "sha512", "iterations": 1000, "salt": "c2FsdA=="}}
      },
      "tokens": {
        "0": {"type": "systemd-tpm2", "keyslots": ["1"], "tpm2-blob": "AAAA", "tpm2-pcrs": [7], "tpm2-pcr-bank": "sha256",
              "tpm2-pubkey": "LS0t", "tpm2_pubkey_pcrs": [11], "tpm2-primary-alg": "ecc", "tpm2-policy-hash": "abcd", "tpm2-pin": false},
        "1": {"type": "systemd-recovery", "keyslots": ["2"]},
        "2": {"type": "something-else", "keyslots": ["10"]}
      },
      "segments": {"0": {"type": "crypt", "offset": "16777216", "size": "dynamic", "encryption": "aes-xts-plain64", "sector_size": 4096}},
      "digests": {"0": {"type": "pbkdf2", "keyslots": ["0", "1", "2", "10"], "segments": ["0"], "hash": "sha256", "iterations": 1000, "salt": "c2FsdA==", "digest": "ZGlnZXN0"}},
      "config": {"json_size": "12288", "keyslots_size": "16744448"}
    }"#;

    #[test]
    fn slots_by_kind_with_the_tpm2_binding() {
        let h = parse(DUMP).unwrap();
        let kinds: Vec<(u32, SlotKind)> = h.slots.iter().map(|s| (s.slot, s.kind)).collect();
        assert_eq!(kinds, [(0, SlotKind::Password), (1, SlotKind::TPM2), (2, SlotKind::RecoveryKey), (10, SlotKind::Other)]);
        assert_eq!(h.tpm2(), Some(&Tpm2 { pcrs: vec![7], bank: Some("sha256".into()), pubkey_pcrs: vec![11], pin: false, pcrlock: false }));
        assert_eq!(h.slots[0].kdf.as_deref(), Some("argon2id"));
        assert_eq!(h.cipher.as_deref(), Some("aes-xts-plain64"));
        // Nothing secret-looking survives into what keeld keeps.
        let kept = serde_json::to_string(&h).unwrap();
        for s in ["c2FsdA", "AAAA", "abcd", "ZGlnZXN0", "LS0t"] {
            assert!(!kept.contains(s), "{s} kept: {kept}");
        }
    }

    #[test]
    fn bad_metadata_is_an_error() {
        assert!(parse("not json").is_err());
        assert!(parse("{}").is_err());
    }
}
