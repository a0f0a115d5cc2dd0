//! Configuration backup and restore (the Keel OEM actions `ExportConfiguration` and
//! `ImportConfiguration` of the Manager).
//!
//! An archive is a POSIX ustar file of regular files only: `manifest.json` first (format name,
//! schema version, keeld version, and each other member's size and SHA-256), then keeld's
//! configuration files as keeld keeps them, so that each is checked on import by the very parser
//! its store loads it with:
//!
//! | member | what |
//! |---|---|
//! | `accounts.json` | accounts (user names, roles, argon2id password hashes) and the account policy (required) |
//! | `sessions.json` | the session timeout, never a session |
//! | `events.json` | event subscriptions and event service settings |
//! | `update/settings.json` | UpdateService settings |
//! | `network/<name>.json` | the network configuration (`STATE/network/`, none written yet) |
//! | `recovery-keys.json` | `{"RecoveryKeys": [...]}` the disk encryption recovery keys, unless excluded |
//!
//! An import checks everything before it changes anything ([`parse`]): the size of the whole
//! archive and of each member, that each member is a regular file with one of those names (no
//! absolute path, no `..`, no link, device or directory, no extension header), no duplicate, the
//! tar header checksums, that no member is cut short and nothing follows the archive's end but
//! zeros, the manifest (format, a schema version no newer than this keeld's, exactly the members
//! present with their sizes and hashes), and the shape of every file. Then the new files are
//! staged in `STATE/.import.tmp`, which is committed by renaming it to `STATE/.import` (one atomic
//! step), and keeld restarts: [`recover`], run as keeld starts and before any store loads, moves
//! each staged file into place (each a rename of a file already fsynced) and removes the files of
//! the set the archive does not carry. A crash before the commit leaves the old configuration, a
//! crash after it is finished at the next start.

use crate::auth::{Accounts, Sessions};
use crate::store::{write_atomic, StateDir};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The manifest's `Format`.
pub const FORMAT: &str = "keel-configuration";
/// The archive schema this keeld writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Largest archive accepted (bytes of tar).
pub const MAX_ARCHIVE: usize = 512 << 10;
/// Largest member.
pub const MAX_MEMBER: u64 = 256 << 10;
/// Most members.
pub const MAX_MEMBERS: usize = 64;
pub const MANIFEST: &str = "manifest.json";
pub const ACCOUNTS: &str = "accounts.json";
pub const SESSIONS: &str = "sessions.json";
pub const EVENTS: &str = "events.json";
pub const UPDATE_SETTINGS: &str = "update/settings.json";
pub const RECOVERY_KEYS: &str = "recovery-keys.json";
pub const NETWORK_DIR: &str = "network";
/// Staged but not committed.
const STAGING: &str = ".import.tmp";
/// Committed: finished by `recover` at the next start.
const STAGED: &str = ".import";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct FileInfo {
    pub size: u64,
    #[serde(rename = "SHA256")]
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub schema_version: u32,
    pub created: String,
    pub keeld_version: String,
    pub includes_recovery_keys: bool,
    pub files: BTreeMap<String, FileInfo>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RecoveryKeys {
    recovery_keys: Vec<String>,
}

/// A checked archive: the files to put in place.
#[derive(Debug)]
pub struct Archive {
    pub manifest: Manifest,
    /// Member name -> contents (the manifest excluded).
    pub files: BTreeMap<String, Vec<u8>>,
    /// The session policy, as a fresh `sessions.json` (no session) will carry it.
    sessions: Option<Vec<u8>>,
    pub recovery_keys: Vec<String>,
}

fn sha256_hex(b: &[u8]) -> String {
    openssl::sha::sha256(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn network_name_ok(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".json") else { return false };
    !stem.is_empty() && stem.len() <= 64 && !stem.starts_with('.') && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `name` is a member an archive may hold.
pub fn member_allowed(name: &str) -> bool {
    match name {
        MANIFEST | ACCOUNTS | SESSIONS | EVENTS | UPDATE_SETTINGS | RECOVERY_KEYS => true,
        _ => name.strip_prefix("network/").is_some_and(network_name_ok),
    }
}

/// A temporary state directory for checking one file with its store's own parser.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> io::Result<Scratch> {
        let d = std::env::temp_dir().join(format!("keel-import-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&d)?;
        Ok(Scratch(d))
    }
    fn state(&self) -> io::Result<StateDir> {
        StateDir::open(&self.0)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------------ export

fn read_opt(p: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The session policy as a `sessions.json` that holds no session.
fn sessions_file(policy: crate::auth::SessionPolicy) -> io::Result<Vec<u8>> {
    let scratch = Scratch::new()?;
    let s = Sessions::open(scratch.state()?)?;
    s.set_policy(policy).map_err(|e| io::Error::other(e.to_string()))?;
    fs::read(scratch.0.join(SESSIONS))
}

/// Make the archive of keeld's configuration now; with `recovery_keys`, the disk encryption
/// recovery keys keeld keeps are included.
pub fn export(keel: &crate::app::Keel, recovery_keys: bool) -> io::Result<Vec<u8>> {
    let state = &keel.state;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert(ACCOUNTS.into(), read_opt(&state.path(ACCOUNTS))?.ok_or_else(|| io::Error::other("there is no accounts.json"))?);
    files.insert(SESSIONS.into(), sessions_file(keel.sessions.policy())?);
    for name in [EVENTS, UPDATE_SETTINGS] {
        if let Some(b) = read_opt(&state.path(name))? {
            files.insert(name.into(), b);
        }
    }
    if let Ok(rd) = fs::read_dir(state.path(NETWORK_DIR)) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.file_type().is_ok_and(|t| t.is_file()) || !network_name_ok(&name) {
                log::warn!("export: network/{name} is not a configuration file keeld exports; left out");
                continue;
            }
            files.insert(format!("{NETWORK_DIR}/{name}"), fs::read(e.path())?);
        }
    }
    let keys = if recovery_keys { keel.crypt.recovery_keys() } else { vec![] };
    if !keys.is_empty() {
        files.insert(RECOVERY_KEYS.into(), serde_json::to_vec_pretty(&RecoveryKeys { recovery_keys: keys })?);
    }
    build(&files)
}

/// A ustar archive of `files` behind their manifest.
pub fn build(files: &BTreeMap<String, Vec<u8>>) -> io::Result<Vec<u8>> {
    let manifest = Manifest {
        format: FORMAT.into(),
        schema_version: SCHEMA_VERSION,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        keeld_version: env!("CARGO_PKG_VERSION").into(),
        includes_recovery_keys: files.contains_key(RECOVERY_KEYS),
        files: files.iter().map(|(k, v)| (k.clone(), FileInfo { size: v.len() as u64, sha256: sha256_hex(v) })).collect(),
    };
    let m = serde_json::to_vec_pretty(&manifest)?;
    let mtime = chrono::Utc::now().timestamp().max(0) as u64;
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in std::iter::once((&MANIFEST.to_string(), &m)).chain(files.iter()) {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)?;
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, data.as_slice())?;
    }
    b.into_inner()
}

// ------------------------------------------------------------------ import: checks

/// Why an archive is refused (the text names the member and the rule, never a secret).
pub type Refusal = String;

fn shown(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    let s: String = s.chars().map(|c| if c.is_control() { '?' } else { c }).take(100).collect();
    format!("'{s}'")
}

/// A member name must be a relative path of plain components from the allowed set.
fn check_name(raw: &[u8]) -> Result<String, Refusal> {
    let name = std::str::from_utf8(raw).map_err(|_| format!("Member {} has a name that is not UTF-8.", shown(raw)))?;
    if name.starts_with('/') {
        return Err(format!("Member {} has an absolute path.", shown(raw)));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(format!("Member {} leaves the archive's directory ('..').", shown(raw)));
    }
    if name.split('/').any(|c| c.is_empty() || c == ".") || name.contains('\\') {
        return Err(format!("Member {} is not a plain relative path.", shown(raw)));
    }
    if !member_allowed(name) {
        return Err(format!("Member {} is not a file of keeld's configuration.", shown(raw)));
    }
    Ok(name.to_string())
}

fn entry_kind(t: tar::EntryType) -> &'static str {
    use tar::EntryType::*;
    match t {
        Link => "a hard link",
        Symlink => "a symbolic link",
        Char => "a character device",
        Block => "a block device",
        Directory => "a directory",
        Fifo => "a FIFO",
        GNULongName | GNULongLink | XHeader | XGlobalHeader => "an extension header (long names are not used)",
        _ => "not a regular file",
    }
}

/// The tar members, in order, with every structural rule checked.
fn members(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Refusal> {
    if bytes.len() > MAX_ARCHIVE {
        return Err(format!("The archive has {} bytes; at most {MAX_ARCHIVE} are accepted.", bytes.len()));
    }
    if bytes.len() < 512 {
        return Err("The archive is truncated: it is shorter than one tar header.".into());
    }
    let mut cursor = io::Cursor::new(bytes);
    let mut out: Vec<(String, Vec<u8>)> = vec![];
    {
        let mut ar = tar::Archive::new(&mut cursor);
        let entries = ar.entries().map_err(|e| format!("The archive is not a tar file: {e}."))?.raw(true);
        for e in entries {
            let mut e = e.map_err(|e| format!("The archive is malformed or truncated: {e}."))?;
            let raw = e.path_bytes().into_owned();
            let t = e.header().entry_type();
            if t != tar::EntryType::Regular {
                return Err(format!("Member {} is {}.", shown(&raw), entry_kind(t)));
            }
            let name = check_name(&raw)?;
            if out.iter().any(|(n, _)| *n == name) {
                return Err(format!("Member '{name}' appears twice."));
            }
            if out.len() >= MAX_MEMBERS {
                return Err(format!("The archive has more than {MAX_MEMBERS} members."));
            }
            let size = e.header().size().map_err(|e| format!("Member '{name}' has a malformed size: {e}."))?;
            if size > MAX_MEMBER {
                return Err(format!("Member '{name}' has {size} bytes; at most {MAX_MEMBER} are accepted."));
            }
            let mut data = Vec::with_capacity(size as usize);
            e.read_to_end(&mut data).map_err(|e| format!("Member '{name}' cannot be read: {e}."))?;
            if data.len() as u64 != size {
                return Err(format!("The archive is truncated: member '{name}' has {} of its {size} bytes.", data.len()));
            }
            out.push((name, data));
        }
    }
    let end = cursor.position() as usize;
    if bytes[end.min(bytes.len())..].iter().any(|b| *b != 0) {
        return Err("Data follows the end of the archive.".into());
    }
    Ok(out)
}

fn json(name: &str, data: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(data).map_err(|e| format!("Member '{name}' is not valid JSON: {e}."))
}

fn check_manifest(data: &[u8]) -> Result<Manifest, Refusal> {
    let v = json(MANIFEST, data)?;
    if v.get("Format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(format!("The manifest does not name the format '{FORMAT}'."));
    }
    let version = v.get("SchemaVersion").and_then(Value::as_u64).ok_or("The manifest has no SchemaVersion.")?;
    if version > SCHEMA_VERSION as u64 {
        return Err(format!("The archive has schema version {version}, newer than the {SCHEMA_VERSION} this keeld reads: import it with a newer keeld."));
    }
    if version == 0 {
        return Err("The manifest's SchemaVersion 0 is not a version.".into());
    }
    serde_json::from_value(v).map_err(|e| format!("The manifest is malformed: {e}."))
}

/// Load `data` as `name` with its store's parser in a scratch state directory.
fn with_scratch<T>(name: &str, data: &[u8], open: impl FnOnce(StateDir) -> io::Result<T>) -> Result<T, Refusal> {
    let scratch = Scratch::new().map_err(|e| format!("Cannot check member '{name}': {e}."))?;
    let st = scratch.state().map_err(|e| e.to_string())?;
    write_atomic(&st.path(name), data, 0o600).map_err(|e| e.to_string())?;
    open(st).map_err(|e| format!("Member '{name}' does not have the shape keeld reads: {e}."))
}

fn check_accounts(data: &[u8]) -> Result<(), Refusal> {
    json(ACCOUNTS, data)?;
    let accounts = with_scratch(ACCOUNTS, data, Accounts::open)?;
    let list = accounts.list();
    let mut names = std::collections::HashSet::new();
    let mut ids = std::collections::HashSet::new();
    for a in &list {
        if a.user_name.is_empty() || !names.insert(a.user_name.clone()) {
            return Err(format!("Member '{ACCOUNTS}' has an empty or repeated user name."));
        }
        if a.id.is_empty() || !ids.insert(a.id.clone()) {
            return Err(format!("Member '{ACCOUNTS}' has an empty or repeated account Id."));
        }
        if crate::privilege::role(&a.role_id).is_none() {
            return Err(format!("Member '{ACCOUNTS}': account '{}' has the unknown role '{}'.", a.user_name, a.role_id));
        }
        if argon2::password_hash::PasswordHash::new(&a.password_hash).is_err() {
            return Err(format!("Member '{ACCOUNTS}': account '{}' has no valid password hash.", a.user_name));
        }
    }
    if !list.iter().any(|a| a.enabled && a.role_id == "Administrator") {
        return Err(format!("Member '{ACCOUNTS}' has no enabled Administrator: importing it would leave no way in."));
    }
    let p = accounts.policy();
    if p.min_password_length == 0 || p.min_password_length > p.max_password_length {
        return Err(format!("Member '{ACCOUNTS}' has an impossible password length policy."));
    }
    Ok(())
}

fn check_sessions(data: &[u8]) -> Result<Vec<u8>, Refusal> {
    json(SESSIONS, data)?;
    let s = with_scratch(SESSIONS, data, Sessions::open)?;
    let p = s.policy();
    if p.timeout <= 0 {
        return Err(format!("Member '{SESSIONS}' has a session timeout that is not positive."));
    }
    sessions_file(p).map_err(|e| e.to_string())
}

fn check_events(data: &[u8]) -> Result<(), Refusal> {
    json(EVENTS, data)?;
    let bus = with_scratch(EVENTS, data, crate::events::EventBus::open)?;
    if bus.subscriptions().len() > crate::events::MAX_SUBSCRIPTIONS {
        return Err(format!("Member '{EVENTS}' has more than {} subscriptions.", crate::events::MAX_SUBSCRIPTIONS));
    }
    Ok(())
}

fn check_keys(data: &[u8]) -> Result<Vec<String>, Refusal> {
    json(RECOVERY_KEYS, data)?;
    let k: RecoveryKeys = serde_json::from_slice(data).map_err(|e| format!("Member '{RECOVERY_KEYS}' is malformed: {e}."))?;
    if k.recovery_keys.is_empty() || k.recovery_keys.len() > crate::crypt::keys::MAX_KEYS {
        return Err(format!("Member '{RECOVERY_KEYS}' must hold 1 to {} recovery keys.", crate::crypt::keys::MAX_KEYS));
    }
    for (i, key) in k.recovery_keys.iter().enumerate() {
        crate::crypt::keys::check(key).map_err(|why| format!("Member '{RECOVERY_KEYS}': recovery key {}: {why}", i + 1))?;
    }
    Ok(k.recovery_keys)
}

/// Check an archive completely (see the module documentation); nothing is written anywhere but a
/// scratch directory that is removed again.
pub fn parse(bytes: &[u8]) -> Result<Archive, Refusal> {
    let mut list = members(bytes)?;
    if list.first().map(|(n, _)| n.as_str()) != Some(MANIFEST) {
        return Err(format!("The first member must be '{MANIFEST}'."));
    }
    let (_, m) = list.remove(0);
    let manifest = check_manifest(&m)?;
    let files: BTreeMap<String, Vec<u8>> = list.into_iter().collect();
    for (name, info) in &manifest.files {
        let data = files.get(name).ok_or_else(|| format!("The archive is truncated: the manifest lists '{name}', which it does not hold."))?;
        if data.len() as u64 != info.size || sha256_hex(data) != info.sha256.to_ascii_lowercase() {
            return Err(format!("Member '{name}' does not match its size and SHA-256 in the manifest."));
        }
    }
    if let Some(extra) = files.keys().find(|n| !manifest.files.contains_key(*n)) {
        return Err(format!("Member '{extra}' is not in the manifest."));
    }
    if manifest.includes_recovery_keys != files.contains_key(RECOVERY_KEYS) {
        return Err("The manifest's IncludesRecoveryKeys does not match the archive.".into());
    }
    let accounts = files.get(ACCOUNTS).ok_or_else(|| format!("The archive has no '{ACCOUNTS}'."))?;
    check_accounts(accounts)?;
    let sessions = files.get(SESSIONS).map(|d| check_sessions(d)).transpose()?;
    if let Some(d) = files.get(EVENTS) {
        check_events(d)?;
    }
    if let Some(d) = files.get(UPDATE_SETTINGS) {
        if !json(UPDATE_SETTINGS, d)?.is_object() {
            return Err(format!("Member '{UPDATE_SETTINGS}' is not a JSON object."));
        }
    }
    for (name, d) in files.iter().filter(|(n, _)| n.starts_with("network/")) {
        if !json(name, d)?.is_object() {
            return Err(format!("Member '{name}' is not a JSON object."));
        }
    }
    let recovery_keys = files.get(RECOVERY_KEYS).map(|d| check_keys(d)).transpose()?.unwrap_or_default();
    Ok(Archive { manifest, files, sessions, recovery_keys })
}

// ------------------------------------------------------------------ import: apply

#[derive(Serialize, Deserialize, Default)]
struct StagePlan {
    /// Files of `files/` to move into place (relative to the state directory).
    write: Vec<String>,
    /// Files to remove (the set's files the archive does not carry).
    remove: Vec<String>,
}

/// Whether an import waits for keeld's next start.
pub fn staged(state: &StateDir) -> bool {
    state.path(STAGED).exists()
}

fn sync_dir(p: &Path) -> io::Result<()> {
    fs::File::open(p)?.sync_all()
}

/// Stage the archive's files (`STATE/.import.tmp`, not yet committed: see `commit`).
pub fn stage(state: &StateDir, a: &Archive) -> io::Result<()> {
    let tmp = state.path(STAGING);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(tmp.join("files").join(NETWORK_DIR))?;
    let mut plan = StagePlan::default();
    let put = |rel: &str, data: &[u8], plan: &mut StagePlan| -> io::Result<()> {
        let p = tmp.join("files").join(rel);
        fs::create_dir_all(p.parent().unwrap())?;
        write_atomic(&p, data, 0o600)?;
        if !rel.starts_with("network/") {
            plan.write.push(rel.to_string());
        }
        Ok(())
    };
    put(ACCOUNTS, &a.files[ACCOUNTS], &mut plan)?;
    match &a.sessions {
        Some(s) => put(SESSIONS, s, &mut plan)?,
        None => plan.remove.push(SESSIONS.into()),
    }
    for name in [EVENTS, UPDATE_SETTINGS] {
        match a.files.get(name) {
            Some(d) => put(name, d, &mut plan)?,
            None => plan.remove.push(name.into()),
        }
    }
    for (name, d) in a.files.iter().filter(|(n, _)| n.starts_with("network/")) {
        put(name, d, &mut plan)?;
    }
    sync_dir(&tmp.join("files").join(NETWORK_DIR))?;
    sync_dir(&tmp.join("files"))?;
    write_atomic(&tmp.join("plan.json"), &serde_json::to_vec_pretty(&plan)?, 0o600)
}

/// Commit what `stage` wrote, in one rename: from now on the next start puts it in place.
pub fn commit(state: &StateDir) -> io::Result<()> {
    fs::rename(state.path(STAGING), state.path(STAGED))?;
    sync_dir(&state.path("."))
}

/// Throw away an import that was staged but not committed.
pub fn discard_staging(state: &StateDir) {
    let _ = fs::remove_dir_all(state.path(STAGING));
}

/// As keeld starts: finish a committed import (idempotent), drop an uncommitted one. Returns
/// whether an import was finished.
pub fn recover(state_dir: &Path) -> io::Result<bool> {
    let state = StateDir::open(state_dir)?;
    let _ = fs::remove_dir_all(state.path(STAGING));
    let staged = state.path(STAGED);
    if !staged.exists() {
        return Ok(false);
    }
    let plan: StagePlan = match fs::read(staged.join("plan.json")).map(|b| serde_json::from_slice(&b)) {
        Ok(Ok(p)) => p,
        // `commit` renames a complete staging directory: this one was not made by keeld.
        other => {
            log::error!("{STAGED} has no readable plan.json ({:?}); dropped, nothing imported", other.err().map(|e| e.to_string()));
            fs::remove_dir_all(&staged)?;
            return Ok(false);
        }
    };
    for rel in &plan.write {
        let src = staged.join("files").join(rel);
        if src.exists() {
            let dst = state.path(rel);
            fs::create_dir_all(dst.parent().unwrap())?;
            fs::rename(&src, &dst)?;
            sync_dir(dst.parent().unwrap())?;
        }
    }
    for rel in &plan.remove {
        match fs::remove_file(state.path(rel)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    // The network configuration is replaced as a whole, while the staged copy is still there.
    let net = staged.join("files").join(NETWORK_DIR);
    if net.exists() {
        match fs::remove_dir_all(state.path(NETWORK_DIR)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::rename(&net, state.path(NETWORK_DIR))?;
    }
    sync_dir(state_dir)?;
    fs::remove_dir_all(&staged)?;
    sync_dir(state_dir)?;
    log::warn!("configuration import finished: {} files written, {} removed", plan.write.len(), plan.remove.len());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account_file(admin: bool) -> Vec<u8> {
        let d = Scratch::new().unwrap();
        let a = Accounts::open(d.state().unwrap()).unwrap();
        let h = a.hash_password("Keel-Test-Pass1").unwrap();
        a.create("admin", h.clone(), if admin { "Administrator" } else { "Operator" }, true, false).unwrap();
        a.create("ro", h, "ReadOnly", true, false).unwrap();
        fs::read(d.0.join(ACCOUNTS)).unwrap()
    }

    fn sample() -> BTreeMap<String, Vec<u8>> {
        let mut f = BTreeMap::new();
        f.insert(ACCOUNTS.to_string(), account_file(true));
        f.insert(EVENTS.to_string(), br#"{"next_id":2,"subscriptions":[]}"#.to_vec());
        f.insert("network/eth0.json".to_string(), br#"{"DHCPv4":true}"#.to_vec());
        f.insert(RECOVERY_KEYS.to_string(), br#"{"RecoveryKeys":["Correct-Horse-Battery-9"]}"#.to_vec());
        f
    }

    /// A tar whose headers say exactly what the test wants (the builder refuses bad paths).
    fn raw_tar(members: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        let mut out = vec![];
        for (name, kind, data) in members {
            let mut h = tar::Header::new_ustar();
            h.as_mut_bytes()[..name.len()].copy_from_slice(name);
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_entry_type(tar::EntryType::new(*kind));
            if *kind == b'2' {
                h.set_link_name_literal(b"/etc/passwd").unwrap();
            }
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    #[test]
    fn an_exported_archive_parses_back() {
        let tar = build(&sample()).unwrap();
        let a = parse(&tar).unwrap();
        assert_eq!(a.manifest.schema_version, SCHEMA_VERSION);
        assert!(a.manifest.includes_recovery_keys);
        assert_eq!(a.recovery_keys, ["Correct-Horse-Battery-9"]);
        assert_eq!(a.files.keys().collect::<Vec<_>>(), [ACCOUNTS, EVENTS, "network/eth0.json", RECOVERY_KEYS]);
    }

    #[test]
    fn every_bad_archive_is_refused_with_its_reason() {
        let good = build(&sample()).unwrap();
        let refused = |b: &[u8], why: &str| {
            let e = parse(b).unwrap_err();
            assert!(e.contains(why), "{e:?} should say {why:?}");
        };
        refused(b"", "truncated");
        refused(&good[..good.len() / 2], "truncated");
        refused(&good[..700], "truncated");
        let mut bad = good.clone();
        bad[600] ^= 0xff; // manifest data
        refused(&bad, "");
        let mut bad = good.clone();
        bad[0] ^= 1; // header checksum
        refused(&bad, "checksum");
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        refused(&trailing, "follows the end");
        refused(&vec![0u8; MAX_ARCHIVE + 1], "at most");
        let m = || serde_json::to_vec(&serde_json::json!({"Format": FORMAT, "SchemaVersion": 1, "Created": "x", "KeeldVersion": "x", "IncludesRecoveryKeys": false, "Files": {}})).unwrap();
        refused(&raw_tar(&[(b"../x", b'0', b"{}")]), "'..'");
        refused(&raw_tar(&[(b"/etc/passwd", b'0', b"x")]), "absolute");
        refused(&raw_tar(&[(MANIFEST.as_bytes(), b'0', &m()), (b"accounts.json", b'2', b"")]), "symbolic link");
        refused(&raw_tar(&[(MANIFEST.as_bytes(), b'0', &m()), (b"accounts.json", b'1', b"")]), "hard link");
        refused(&raw_tar(&[(MANIFEST.as_bytes(), b'0', &m()), (b"dev", b'3', b"")]), "character device");
        refused(&raw_tar(&[(MANIFEST.as_bytes(), b'0', &m()), (b"network", b'5', b"")]), "directory");
        refused(&raw_tar(&[(MANIFEST.as_bytes(), b'0', &m()), (b"././@LongLink", b'L', b"x")]), "extension header");
        refused(&raw_tar(&[(MANIFEST.as_bytes(), b'0', &m()), (b"etc/shadow", b'0', b"x")]), "not a file of keeld's configuration");
        refused(&raw_tar(&[(MANIFEST.as_bytes(), b'0', &m()), (b"network/./a.json", b'0', b"{}")]), "plain relative");
        refused(&raw_tar(&[(MANIFEST.as_bytes(), b'0', &m()), (MANIFEST.as_bytes(), b'0', &m())]), "twice");
        refused(&raw_tar(&[(b"accounts.json", b'0', b"{}")]), "first member");
        let big = vec![b' '; MAX_MEMBER as usize + 1];
        refused(&raw_tar(&[(MANIFEST.as_bytes(), b'0', &big)]), "at most");
        // Manifest rules.
        let with = |v: serde_json::Value| raw_tar(&[(MANIFEST.as_bytes(), b'0', &serde_json::to_vec(&v).unwrap())]);
        refused(&with(serde_json::json!({"Format": "zip", "SchemaVersion": 1})), "format");
        refused(&with(serde_json::json!({"Format": FORMAT, "SchemaVersion": 2})), "newer");
        refused(&with(serde_json::json!({"Format": FORMAT, "SchemaVersion": 1})), "malformed");
        refused(&raw_tar(&[(MANIFEST.as_bytes(), b'0', &m())]), "no 'accounts.json'");
        // Contents: listed but missing, unlisted, altered, wrong shape.
        let mut files = sample();
        files.insert(ACCOUNTS.into(), account_file(false));
        refused(&build(&files).unwrap(), "no enabled Administrator");
        let mut files = sample();
        files.insert(EVENTS.into(), br#"{"subscriptions": 5}"#.to_vec());
        refused(&build(&files).unwrap(), "shape");
        let mut files = sample();
        files.insert(RECOVERY_KEYS.into(), br#"{"RecoveryKeys":["short"]}"#.to_vec());
        refused(&build(&files).unwrap(), "recovery key 1");
        let mut files = sample();
        files.insert("network/eth0.json".into(), b"[1]".to_vec());
        refused(&build(&files).unwrap(), "JSON object");
    }

    #[test]
    fn a_committed_import_is_finished_at_start_and_an_uncommitted_one_dropped() {
        let d = Scratch::new().unwrap();
        let st = d.state().unwrap();
        fs::create_dir_all(st.path("network")).unwrap();
        fs::write(st.path("network/old.json"), "{}").unwrap();
        fs::write(st.path(EVENTS), "old").unwrap();
        fs::create_dir_all(st.path("update")).unwrap();
        fs::write(st.path(UPDATE_SETTINGS), "{}").unwrap();
        let a = parse(&build(&sample()).unwrap()).unwrap();
        stage(&st, &a).unwrap();
        assert!(!staged(&st), "staged, not committed");
        commit(&st).unwrap();
        assert!(staged(&st));
        // Nothing moved until the start.
        assert_eq!(fs::read_to_string(st.path(EVENTS)).unwrap(), "old");
        assert!(recover(&d.0).unwrap());
        assert!(!staged(&st));
        assert_eq!(fs::read(st.path(EVENTS)).unwrap(), a.files[EVENTS]);
        assert_eq!(fs::read(st.path(ACCOUNTS)).unwrap(), a.files[ACCOUNTS]);
        assert!(!st.path(UPDATE_SETTINGS).exists(), "not in the archive: back to defaults");
        assert!(!st.path("network/old.json").exists() && st.path("network/eth0.json").exists());
        assert!(!recover(&d.0).unwrap());
        // An import staged but not committed is dropped; so is a committed one keeld did not make.
        fs::create_dir_all(st.path(STAGING)).unwrap();
        assert!(!recover(&d.0).unwrap());
        assert!(!st.path(STAGING).exists());
        let accounts = fs::read(st.path(ACCOUNTS)).unwrap();
        fs::create_dir_all(st.path(STAGED).join("files")).unwrap();
        fs::write(st.path(STAGED).join("files").join(ACCOUNTS), "{}").unwrap();
        assert!(!recover(&d.0).unwrap());
        assert!(!staged(&st));
        assert_eq!(fs::read(st.path(ACCOUNTS)).unwrap(), accounts);
    }
}
