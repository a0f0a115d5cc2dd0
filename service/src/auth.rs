//! Accounts, password hashing (argon2id), lockout, sessions and the authenticated principal.

use crate::messages::{base, Message, RfError, RfResult};
use crate::privilege::{role, PrivSet, RoleDef};
use crate::store::StateDir;
use actix_web::http::StatusCode;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use subtle::ConstantTimeEq;

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Who made a request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub account_id: String,
    pub user: String,
    pub role: &'static RoleDef,
    pub privs: PrivSet,
    pub session_id: Option<String>,
    pub password_change_required: bool,
}

// ------------------------------------------------------------------ accounts

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub user_name: String,
    pub role_id: String,
    pub enabled: bool,
    pub password_hash: String,
    #[serde(default)]
    pub password_change_required: bool,
    #[serde(default)]
    pub locked: bool,
    #[serde(default)]
    pub locked_until: i64,
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub first_failure: i64,
}

/// The AccountService settings an Administrator may change.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountPolicy {
    pub min_password_length: usize,
    pub max_password_length: usize,
    pub lockout_threshold: u32,
    pub lockout_duration: i64,
    pub lockout_counter_reset_after: i64,
    pub auth_failure_logging_threshold: u32,
}

impl Default for AccountPolicy {
    fn default() -> Self {
        AccountPolicy {
            min_password_length: 8,
            max_password_length: 128,
            lockout_threshold: 5,
            lockout_duration: 300,
            lockout_counter_reset_after: 60,
            auth_failure_logging_threshold: 3,
        }
    }
}

pub const PASSWORD_GUIDANCE: &str = "Passwords have MinPasswordLength to MaxPasswordLength characters, use at least three of: lower-case letters, upper-case letters, digits, other characters, and do not contain the user name.";

#[derive(Default, Serialize, Deserialize)]
struct AccountsFile {
    next_id: u64,
    accounts: Vec<Account>,
    #[serde(default)]
    policy: AccountPolicy,
}

pub enum VerifyOutcome {
    Ok(Principal),
    /// Wrong user or password, disabled or locked account: all look the same to the client.
    Denied,
    /// Too many password checks already waiting (a flood of logins): try again shortly.
    Busy,
}

/// Password checks allowed to wait for the KDF at once; beyond, callers get 503 at once, so a
/// flood of bad logins cannot delay real ones by seconds or pile up blocking threads.
pub const MAX_KDF_WAITERS: usize = 8;

pub struct Accounts {
    dir: StateDir,
    inner: RwLock<AccountsFile>,
    /// Verified Basic credentials: user -> keyed digest of the password, so that Basic auth on
    /// every request does not pay for argon2 each time. Keyed by a per-process random key,
    /// dropped whenever the account changes.
    cache: RwLock<HashMap<String, ([u8; 32], i64)>>,
    cache_key: [u8; 32],
    hasher: Argon2<'static>,
    /// Serialises argon2 work so a flood of bad logins cannot take all memory.
    kdf_gate: Mutex<()>,
    /// How many verifications are running or waiting for the gate.
    kdf_waiting: std::sync::atomic::AtomicUsize,
}

const CACHE_SECONDS: i64 = 300;
const FILE: &str = "accounts.json";

impl Accounts {
    pub fn open(dir: StateDir) -> std::io::Result<Self> {
        let file: AccountsFile = dir.load(FILE)?.unwrap_or(AccountsFile { next_id: 1, ..Default::default() });
        let mut cache_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut cache_key);
        // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
        let params = Params::new(19 * 1024, 2, 1, None).expect("argon2 params");
        Ok(Accounts {
            dir,
            inner: RwLock::new(file),
            cache: RwLock::new(HashMap::new()),
            cache_key,
            hasher: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            kdf_gate: Mutex::new(()),
            kdf_waiting: Default::default(),
        })
    }

    fn persist(&self, f: &AccountsFile) -> RfResult<()> {
        self.dir.save(FILE, f).map_err(RfError::internal)
    }

    pub fn is_empty(&self) -> bool {
        self.inner.read().unwrap().accounts.is_empty()
    }
    pub fn policy(&self) -> AccountPolicy {
        self.inner.read().unwrap().policy.clone()
    }
    pub fn set_policy(&self, p: AccountPolicy) -> RfResult<()> {
        let mut f = self.inner.write().unwrap();
        let old = std::mem::replace(&mut f.policy, p);
        if let Err(e) = self.persist(&f) {
            f.policy = old;
            return Err(e);
        }
        Ok(())
    }
    pub fn list(&self) -> Vec<Account> {
        self.inner.read().unwrap().accounts.clone()
    }
    pub fn get(&self, id: &str) -> Option<Account> {
        self.inner.read().unwrap().accounts.iter().find(|a| a.id == id).cloned()
    }
    pub fn by_name(&self, user: &str) -> Option<Account> {
        self.inner.read().unwrap().accounts.iter().find(|a| a.user_name == user).cloned()
    }

    pub fn hash_password(&self, password: &str) -> RfResult<String> {
        let _g = self.kdf_gate.lock().unwrap();
        let salt = SaltString::generate(&mut OsRng);
        self.hasher.hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(RfError::internal)
    }

    /// Check a new password against the policy; the messages never contain the password.
    pub fn check_password(&self, user: &str, password: &str) -> RfResult<()> {
        let p = self.policy();
        let n = password.chars().count();
        let bad = |def| Err(RfError::new(StatusCode::BAD_REQUEST, Message::base(def, &[]).related("Password")));
        if n < p.min_password_length || n > p.max_password_length {
            return bad(&base::PASSWORD_INCORRECT_LENGTH);
        }
        let classes = [
            password.chars().any(|c| c.is_lowercase()),
            password.chars().any(|c| c.is_uppercase()),
            password.chars().any(|c| c.is_ascii_digit()),
            password.chars().any(|c| !c.is_alphanumeric()),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if classes < 3 || (!user.is_empty() && password.to_lowercase().contains(&user.to_lowercase())) {
            return bad(&base::PASSWORD_COMPLEXITY_NOT_MET);
        }
        Ok(())
    }

    pub fn create(&self, user: &str, password_hash: String, role_id: &str, enabled: bool, pcr: bool) -> RfResult<Account> {
        let mut f = self.inner.write().unwrap();
        if f.accounts.iter().any(|a| a.user_name == user) {
            return Err(RfError::new(
                StatusCode::CONFLICT,
                Message::base(&base::RESOURCE_ALREADY_EXISTS, &["ManagerAccount", "UserName", user]).related("UserName"),
            ));
        }
        let id = f.next_id.max(1);
        let acct = Account {
            id: id.to_string(),
            user_name: user.to_string(),
            role_id: role_id.to_string(),
            enabled,
            password_hash,
            password_change_required: pcr,
            locked: false,
            locked_until: 0,
            failures: 0,
            first_failure: 0,
        };
        f.next_id = id + 1;
        f.accounts.push(acct.clone());
        if let Err(e) = self.persist(&f) {
            f.accounts.pop();
            f.next_id = id;
            return Err(e);
        }
        Ok(acct)
    }

    /// Apply `change` to the account atomically: in memory and on disk, or not at all.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut Account) -> RfResult<()>) -> RfResult<Account> {
        let mut f = self.inner.write().unwrap();
        let idx = f.accounts.iter().position(|a| a.id == id).ok_or_else(|| RfError::resource_not_found("ManagerAccount", id))?;
        let before = f.accounts[idx].clone();
        let mut after = before.clone();
        change(&mut after)?;
        if after.user_name != before.user_name && f.accounts.iter().any(|a| a.user_name == after.user_name) {
            return Err(RfError::new(
                StatusCode::CONFLICT,
                Message::base(&base::RESOURCE_ALREADY_EXISTS, &["ManagerAccount", "UserName", &after.user_name]).related("UserName"),
            ));
        }
        f.accounts[idx] = after.clone();
        if let Err(e) = self.persist(&f) {
            f.accounts[idx] = before;
            return Err(e);
        }
        drop(f);
        self.forget(&before.user_name);
        Ok(after)
    }

    pub fn delete(&self, id: &str) -> RfResult<Account> {
        let mut f = self.inner.write().unwrap();
        let idx = f.accounts.iter().position(|a| a.id == id).ok_or_else(|| RfError::resource_not_found("ManagerAccount", id))?;
        let removed = f.accounts.remove(idx);
        if let Err(e) = self.persist(&f) {
            f.accounts.insert(idx, removed);
            return Err(e);
        }
        drop(f);
        self.forget(&removed.user_name);
        Ok(removed)
    }

    fn forget(&self, user: &str) {
        self.cache.write().unwrap().remove(user);
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update(user.as_bytes());
        h.update([0u8]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    pub fn principal_for(&self, a: &Account, session_id: Option<String>) -> Option<Principal> {
        let role = role(&a.role_id)?;
        Some(Principal {
            account_id: a.id.clone(),
            user: a.user_name.clone(),
            role,
            privs: PrivSet::of(role.privileges),
            session_id,
            password_change_required: a.password_change_required,
        })
    }

    /// Fast path: credentials verified recently (Basic auth on every request).
    pub fn verify_cached(&self, user: &str, password: &str) -> Option<Principal> {
        let d = self.digest(user, password);
        let hit = {
            let c = self.cache.read().unwrap();
            matches!(c.get(user), Some((cd, at)) if bool::from(cd.ct_eq(&d)) && now() - at < CACHE_SECONDS)
        };
        if !hit {
            return None;
        }
        let a = self.by_name(user)?;
        if !a.enabled || self.is_locked(&a) {
            return None;
        }
        self.principal_for(&a, None)
    }

    fn is_locked(&self, a: &Account) -> bool {
        a.locked && (a.locked_until == 0 || a.locked_until > now())
    }

    /// The slow path: argon2 verification, with failure counting and lockout. Blocking: call it
    /// from a blocking thread.
    pub fn verify(&self, user: &str, password: &str) -> VerifyOutcome {
        use std::sync::atomic::Ordering::SeqCst;
        if self.kdf_waiting.fetch_add(1, SeqCst) >= MAX_KDF_WAITERS {
            self.kdf_waiting.fetch_sub(1, SeqCst);
            log::warn!("password check for {user} refused: {MAX_KDF_WAITERS} already waiting");
            return VerifyOutcome::Busy;
        }
        let out = self.verify_gated(user, password);
        self.kdf_waiting.fetch_sub(1, SeqCst);
        out
    }

    fn verify_gated(&self, user: &str, password: &str) -> VerifyOutcome {
        let Some(a) = self.by_name(user) else {
            // Spend the same effort as for a real account, so timing does not reveal names.
            let _ = self.hash_password(password);
            return VerifyOutcome::Denied;
        };
        let ok = {
            let _g = self.kdf_gate.lock().unwrap();
            PasswordHash::new(&a.password_hash).map(|h| self.hasher.verify_password(password.as_bytes(), &h).is_ok()).unwrap_or(false)
        };
        let policy = self.policy();
        if self.is_locked(&a) {
            log::warn!("authentication refused for locked account {user}");
            return VerifyOutcome::Denied;
        }
        if !ok {
            let t = now();
            let _ = self.update(&a.id, |acct| {
                if acct.failures == 0 || t - acct.first_failure > policy.lockout_counter_reset_after {
                    acct.failures = 0;
                    acct.first_failure = t;
                }
                acct.failures += 1;
                if policy.lockout_threshold > 0 && acct.failures >= policy.lockout_threshold {
                    acct.locked = true;
                    acct.locked_until = if policy.lockout_duration > 0 { t + policy.lockout_duration } else { 0 };
                    acct.failures = 0;
                    log::warn!("account {} locked after repeated authentication failures", acct.user_name);
                }
                Ok(())
            });
            if policy.auth_failure_logging_threshold > 0 {
                log::warn!("authentication failure for account {user}");
            }
            return VerifyOutcome::Denied;
        }
        if !a.enabled {
            return VerifyOutcome::Denied;
        }
        if a.failures > 0 || a.locked {
            let _ = self.update(&a.id, |acct| {
                acct.failures = 0;
                acct.locked = false;
                acct.locked_until = 0;
                Ok(())
            });
        }
        self.cache.write().unwrap().insert(user.to_string(), (self.digest(user, password), now()));
        match self.principal_for(&a, None) {
            Some(p) => VerifyOutcome::Ok(p),
            None => VerifyOutcome::Denied,
        }
    }

    /// Report the lockout state as Redfish shows it (an expired lock reads as unlocked).
    pub fn locked_now(&self, a: &Account) -> bool {
        self.is_locked(a)
    }
}

// ------------------------------------------------------------------ sessions

#[derive(Debug, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub user_name: String,
    pub account_id: String,
    /// SHA-256 of the token, hex: the token itself is never stored.
    pub token_hash: String,
    pub created: i64,
    #[serde(with = "atomic_i64")]
    pub last_used: AtomicI64,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub context: Option<String>,
}

mod atomic_i64 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::atomic::{AtomicI64, Ordering};
    pub fn serialize<S: Serializer>(v: &AtomicI64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(v.load(Ordering::Relaxed))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AtomicI64, D::Error> {
        Ok(AtomicI64::new(i64::deserialize(d)?))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionPolicy {
    pub timeout: i64,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy { timeout: 1800 }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct SessionsFile {
    sessions: Vec<Arc<Session>>,
    #[serde(default)]
    policy: SessionPolicy,
}

pub struct Sessions {
    dir: StateDir,
    by_token: RwLock<HashMap<[u8; 32], Arc<Session>>>,
    policy: RwLock<SessionPolicy>,
    dirty: std::sync::atomic::AtomicBool,
}

pub const MAX_SESSIONS: usize = 256;
const SFILE: &str = "sessions.json";

/// NIST SP 800-22 frequency (monobit) and runs tests at the 1 % level, as the DMTF protocol
/// validator applies them to session tokens: about 2 % of random draws fail and are redrawn.
pub fn looks_random(bytes: &[u8]) -> bool {
    let n = (bytes.len() * 8) as f64;
    let bits = || bytes.iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1));
    let ones = bits().filter(|b| *b == 1).count() as f64;
    if ((ones - (n - ones)).abs() / n.sqrt()) > 2.575_829_3 {
        return false;
    }
    let pi = ones / n;
    if (pi - 0.5).abs() >= 2.0 / n.sqrt() || ones == n {
        return false;
    }
    let v: Vec<u8> = bits().collect();
    let runs = 1.0 + v.windows(2).filter(|w| w[0] != w[1]).count() as f64;
    (runs - 2.0 * n * pi * (1.0 - pi)).abs() / (2.0 * (2.0 * n).sqrt() * pi * (1.0 - pi)) <= 1.821_386_4
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Sessions {
    pub fn open(dir: StateDir) -> std::io::Result<Self> {
        let f: SessionsFile = dir.load(SFILE)?.unwrap_or_default();
        let mut map = HashMap::new();
        for s in f.sessions {
            let mut d = [0u8; 32];
            if s.token_hash.len() == 64 {
                for (i, ch) in s.token_hash.as_bytes().chunks(2).enumerate() {
                    d[i] = u8::from_str_radix(std::str::from_utf8(ch).unwrap_or("00"), 16).unwrap_or(0);
                }
                map.insert(d, s);
            }
        }
        let me = Sessions { dir, by_token: RwLock::new(map), policy: RwLock::new(f.policy), dirty: false.into() };
        me.expire();
        Ok(me)
    }

    fn persist(&self) -> RfResult<()> {
        let file = SessionsFile {
            sessions: self.by_token.read().unwrap().values().cloned().collect(),
            policy: self.policy.read().unwrap().clone(),
        };
        self.dirty.store(false, Ordering::Relaxed);
        self.dir.save(SFILE, &file).map_err(RfError::internal)
    }

    pub fn policy(&self) -> SessionPolicy {
        self.policy.read().unwrap().clone()
    }
    pub fn set_policy(&self, p: SessionPolicy) -> RfResult<()> {
        let old = std::mem::replace(&mut *self.policy.write().unwrap(), p);
        if let Err(e) = self.persist() {
            *self.policy.write().unwrap() = old;
            return Err(e);
        }
        Ok(())
    }

    /// Create a session; returns it and the token (shown to the client once, never stored).
    pub fn create(&self, a: &Account, origin: Option<String>, context: Option<String>) -> RfResult<(Arc<Session>, String)> {
        self.expire();
        if self.by_token.read().unwrap().len() >= MAX_SESSIONS {
            return Err(RfError::new(StatusCode::SERVICE_UNAVAILABLE, Message::base(&base::SESSION_LIMIT_EXCEEDED, &[])));
        }
        let mut raw = [0u8; 32];
        loop {
            rand::thread_rng().fill_bytes(&mut raw);
            if looks_random(&raw) {
                break;
            }
        }
        let token = hex(&raw);
        let mut idb = [0u8; 10];
        rand::thread_rng().fill_bytes(&mut idb);
        let digest = token_digest(&token);
        let t = now();
        let s = Arc::new(Session {
            id: hex(&idb),
            user_name: a.user_name.clone(),
            account_id: a.id.clone(),
            token_hash: hex(&digest),
            created: t,
            last_used: AtomicI64::new(t),
            origin,
            context,
        });
        self.by_token.write().unwrap().insert(digest, s.clone());
        if let Err(e) = self.persist() {
            self.by_token.write().unwrap().remove(&digest);
            return Err(e);
        }
        Ok((s, token))
    }

    /// Look a token up, refreshing its idle timer.
    pub fn lookup(&self, token: &str) -> Option<Arc<Session>> {
        let d = token_digest(token);
        let s = self.by_token.read().unwrap().get(&d).cloned()?;
        let t = now();
        if t - s.last_used.load(Ordering::Relaxed) > self.policy.read().unwrap().timeout {
            self.remove_where(|x| x.id == s.id);
            return None;
        }
        if s.last_used.swap(t, Ordering::Relaxed) != t {
            self.dirty.store(true, Ordering::Relaxed);
        }
        Some(s)
    }

    pub fn list(&self) -> Vec<Arc<Session>> {
        self.expire();
        let mut v: Vec<_> = self.by_token.read().unwrap().values().cloned().collect();
        v.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        v
    }
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.list().into_iter().find(|s| s.id == id)
    }

    /// Remove the sessions matching `pred`; returns the removed ones.
    pub fn remove_where(&self, pred: impl Fn(&Session) -> bool) -> Vec<Arc<Session>> {
        let mut removed = vec![];
        {
            let mut m = self.by_token.write().unwrap();
            m.retain(|_, s| {
                if pred(s) {
                    removed.push(s.clone());
                    false
                } else {
                    true
                }
            });
        }
        if !removed.is_empty() {
            let _ = self.persist();
        }
        removed
    }

    /// Drop idle sessions; returns the expired ones.
    pub fn expire(&self) -> Vec<Arc<Session>> {
        let t = now();
        let timeout = self.policy.read().unwrap().timeout;
        self.remove_where(|s| t - s.last_used.load(Ordering::Relaxed) > timeout)
    }

    /// Persist refreshed idle timers now and then (not on every request).
    pub fn flush_if_dirty(&self) {
        if self.dirty.load(Ordering::Relaxed) {
            let _ = self.persist();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> StateDir {
        StateDir::open(&std::env::temp_dir().join(format!("keel-auth-{}", uuid::Uuid::new_v4()))).unwrap()
    }

    #[test]
    fn password_policy() {
        let a = Accounts::open(tmp()).unwrap();
        assert!(a.check_password("bob", "Short1!").is_err());
        assert_eq!(a.check_password("bob", "alllowercase").unwrap_err().messages[0].def.key, "PasswordComplexityNotMet");
        assert_eq!(a.check_password("bob", "Xbob1234!x").unwrap_err().messages[0].def.key, "PasswordComplexityNotMet");
        assert!(a.check_password("bob", "Correct-Horse-7").is_ok());
    }

    #[test]
    fn a_flood_of_checks_is_refused_not_queued() {
        use std::sync::Arc;
        let a = Arc::new(Accounts::open(tmp()).unwrap());
        a.create("bob", a.hash_password("Secret-Pass-1").unwrap(), "ReadOnly", true, false).unwrap();
        let threads: Vec<_> = (0..24)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || matches!(a.verify("nobody", "x"), VerifyOutcome::Busy))
            })
            .collect();
        let busy = threads.into_iter().map(|t| t.join().unwrap()).filter(|b| *b).count();
        assert!(busy >= 24 - MAX_KDF_WAITERS - 2 && busy < 24, "{busy} of 24 refused");
        // Once the flood is over, checks run again.
        assert!(matches!(a.verify("bob", "Secret-Pass-1"), VerifyOutcome::Ok(_)));
    }

    #[test]
    fn verify_lockout_and_cache() {
        let d = tmp();
        let a = Accounts::open(d.clone()).unwrap();
        let h = a.hash_password("Secret-Pass-1").unwrap();
        assert!(h.starts_with("$argon2id$"));
        a.create("alice", h, "Operator", true, false).unwrap();
        assert!(a.verify_cached("alice", "Secret-Pass-1").is_none());
        assert!(matches!(a.verify("alice", "Secret-Pass-1"), VerifyOutcome::Ok(p) if p.role.id == "Operator"));
        assert!(a.verify_cached("alice", "Secret-Pass-1").is_some());
        assert!(a.verify_cached("alice", "wrong").is_none());
        for _ in 0..5 {
            assert!(matches!(a.verify("alice", "nope"), VerifyOutcome::Denied));
        }
        let acct = a.by_name("alice").unwrap();
        assert!(a.locked_now(&acct));
        // Locked: even the right password is refused, and the cache was dropped.
        assert!(matches!(a.verify("alice", "Secret-Pass-1"), VerifyOutcome::Denied));
        assert!(a.verify_cached("alice", "Secret-Pass-1").is_none());
        // The lock survives a restart.
        let b = Accounts::open(d).unwrap();
        assert!(b.locked_now(&b.by_name("alice").unwrap()));
    }

    #[test]
    fn randomness_screen_rejects_obvious_patterns() {
        assert!(!looks_random(&[0u8; 32]));
        assert!(!looks_random(&[0xffu8; 32]));
        assert!(!looks_random(&[0xaau8; 32]), "alternating bits have too many runs");
        assert!(!looks_random(&[0xf0u8; 32]));
        let mut passed = 0;
        for _ in 0..200 {
            let mut b = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut b);
            passed += looks_random(&b) as u32;
        }
        assert!(passed > 180, "{passed}/200 random draws passed");
    }

    #[test]
    fn sessions_persist_hashed_and_expire() {
        let d = tmp();
        let acc = Accounts::open(d.clone()).unwrap();
        let a = acc.create("u", acc.hash_password("Xx-123456").unwrap(), "ReadOnly", true, false).unwrap();
        let s = Sessions::open(d.clone()).unwrap();
        let (sess, token) = s.create(&a, None, None).unwrap();
        assert_eq!(token.len(), 64);
        let text = std::fs::read_to_string(d.path("sessions.json")).unwrap();
        assert!(!text.contains(&token), "token stored in clear");
        let s2 = Sessions::open(d.clone()).unwrap();
        assert_eq!(s2.lookup(&token).unwrap().id, sess.id);
        assert!(s2.lookup("bogus").is_none());
        s2.set_policy(SessionPolicy { timeout: -1 }).unwrap();
        assert!(s2.lookup(&token).is_none());
    }
}
