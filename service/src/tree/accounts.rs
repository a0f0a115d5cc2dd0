//! AccountService: local accounts, the predefined roles, password and lockout policy.

use super::{collection, link, Reply, Req, Tree};
use crate::auth::{Account, PASSWORD_GUIDANCE};
use crate::messages::{base, Message, RfError, RfResult};
use crate::privilege::{role, Privilege, CONFIGURE_USERS, LOGIN, MANAGER_USERS_OR_SELF, ROLES, USERS_OR_SELF};
use crate::protocol::body::{Prop, Ty};
use crate::types;
use actix_web::http::StatusCode;
use serde_json::{json, Map, Value};

const ROLE_IDS: &[&str] = &["Administrator", "Operator", "ReadOnly"];

const SERVICE_PATCH: &[Prop] = &[
    Prop::new("MinPasswordLength", Ty::Int { min: 8, max: 64 }, "Shortest password accepted."),
    Prop::new("MaxPasswordLength", Ty::Int { min: 16, max: 256 }, "Longest password accepted."),
    Prop::new("AccountLockoutThreshold", Ty::Int { min: 0, max: 1000 }, "Failed logins that lock an account (0: never)."),
    Prop::new("AccountLockoutDuration", Ty::Int { min: 0, max: 86400 }, "Seconds an account stays locked (0: until unlocked)."),
    Prop::new("AccountLockoutCounterResetAfter", Ty::Int { min: 1, max: 86400 }, "Seconds after which the failure count restarts."),
    Prop::new("AuthFailureLoggingThreshold", Ty::Int { min: 0, max: 1000 }, "Failures after which each one is logged."),
];

const ACCOUNT_CREATE: &[Prop] = &[
    Prop::required("UserName", Ty::Str { min: 1, max: 32 }, "The login name."),
    Prop::required("Password", Ty::Secret { max: 256 }, "The password (write-only)."),
    Prop::required("RoleId", Ty::Enum(ROLE_IDS), "The role: Administrator, Operator or ReadOnly."),
    Prop::new("Enabled", Ty::Bool, "Whether the account may log in (default true)."),
    Prop::new("PasswordChangeRequired", Ty::Bool, "Whether the password must be changed at next login."),
    Prop::new("AccountTypes", Ty::EnumList(&["Redfish"]), "Only Redfish accounts exist."),
];

const ACCOUNT_PATCH: &[Prop] = &[
    Prop::new("UserName", Ty::Str { min: 1, max: 32 }, "The login name."),
    Prop::new("Password", Ty::Secret { max: 256 }, "A new password (write-only)."),
    Prop::new("RoleId", Ty::Enum(ROLE_IDS), "The role."),
    Prop::new("Enabled", Ty::Bool, "Whether the account may log in."),
    Prop::new("Locked", Ty::Bool, "Only false may be written: unlocks the account."),
    Prop::new("PasswordChangeRequired", Ty::Bool, "Whether the password must be changed at next login."),
];

pub fn register(t: &mut Tree) {
    t.add(
        Tree::route("/redfish/v1/AccountService", "AccountService", Some(types::ACCOUNT_SERVICE))
            .get(LOGIN, service)
            .patch(CONFIGURE_USERS, SERVICE_PATCH, patch_service),
    );
    t.add(
        Tree::route("/redfish/v1/AccountService/Accounts", "ManagerAccountCollection", Some(types::MANAGER_ACCOUNT_COLLECTION))
            .get(LOGIN, list)
            .create(CONFIGURE_USERS, ACCOUNT_CREATE, "Create an account", create),
    );
    t.add(
        Tree::route("/redfish/v1/AccountService/Accounts/{AccountId}", "ManagerAccount", Some(types::MANAGER_ACCOUNT))
            .get(MANAGER_USERS_OR_SELF, one)
            .patch(USERS_OR_SELF, ACCOUNT_PATCH, patch_account)
            .delete(CONFIGURE_USERS, remove),
    );
    t.add(Tree::route("/redfish/v1/AccountService/Roles", "RoleCollection", Some(types::ROLE_COLLECTION)).get(LOGIN, roles));
    t.add(Tree::route("/redfish/v1/AccountService/Roles/{RoleId}", "Role", Some(types::ROLE)).get(LOGIN, one_role));
}

async fn service(r: Req) -> RfResult<Value> {
    let p = r.keel.accounts.policy();
    Ok(json!({
        "Id": "AccountService",
        "Name": "Account Service",
        "Description": "Local accounts and roles",
        "ServiceEnabled": true,
        "LocalAccountAuth": "Enabled",
        "HTTPBasicAuth": "Enabled",
        "MinPasswordLength": p.min_password_length,
        "MaxPasswordLength": p.max_password_length,
        "PasswordGuidanceMessage": PASSWORD_GUIDANCE,
        "AccountLockoutThreshold": p.lockout_threshold,
        "AccountLockoutDuration": p.lockout_duration,
        "AccountLockoutCounterResetAfter": p.lockout_counter_reset_after,
        "AccountLockoutCounterResetEnabled": true,
        "AuthFailureLoggingThreshold": p.auth_failure_logging_threshold,
        "SupportedAccountTypes": ["Redfish"],
        "Accounts": link("/redfish/v1/AccountService/Accounts"),
        "Roles": link("/redfish/v1/AccountService/Roles"),
        "Status": { "State": "Enabled", "Health": "OK" },
    }))
}

async fn patch_service(r: Req, b: Map<String, Value>) -> RfResult<()> {
    let mut p = r.keel.accounts.policy();
    let int = |k: &str| b.get(k).and_then(Value::as_i64);
    if let Some(v) = int("MinPasswordLength") {
        p.min_password_length = v as usize;
    }
    if let Some(v) = int("MaxPasswordLength") {
        p.max_password_length = v as usize;
    }
    if p.min_password_length > p.max_password_length {
        let v = b.get("MinPasswordLength").or(b.get("MaxPasswordLength")).cloned().unwrap_or_default();
        return Err(RfError::out_of_range(&v, if b.contains_key("MinPasswordLength") { "MinPasswordLength" } else { "MaxPasswordLength" }));
    }
    if let Some(v) = int("AccountLockoutThreshold") {
        p.lockout_threshold = v as u32;
    }
    if let Some(v) = int("AccountLockoutDuration") {
        p.lockout_duration = v;
    }
    if let Some(v) = int("AccountLockoutCounterResetAfter") {
        p.lockout_counter_reset_after = v;
    }
    if let Some(v) = int("AuthFailureLoggingThreshold") {
        p.auth_failure_logging_threshold = v as u32;
    }
    r.keel.accounts.set_policy(p)
}

pub fn uri(id: &str) -> String {
    format!("/redfish/v1/AccountService/Accounts/{id}")
}

fn account_json(r: &Req, a: &Account) -> Value {
    json!({
        "Id": a.id,
        "Name": "User Account",
        "Description": format!("Account {}", a.user_name),
        "UserName": a.user_name,
        "Password": null,
        "RoleId": a.role_id,
        "Enabled": a.enabled,
        "Locked": r.keel.accounts.locked_now(a),
        "PasswordChangeRequired": a.password_change_required,
        "AccountTypes": ["Redfish"],
        "Links": { "Role": link(format!("/redfish/v1/AccountService/Roles/{}", a.role_id)) },
    })
}

/// ConfigureSelf reaches only the principal's own account (DSP0266 §13.2.4).
fn may_see(r: &Req, id: &str) -> bool {
    let p = r.principal();
    p.privs.has(Privilege::ConfigureUsers) || p.privs.has(Privilege::ConfigureManager) || p.account_id == id
}

async fn list(r: Req) -> RfResult<Value> {
    let ids: Vec<String> = r.keel.accounts.list().iter().filter(|a| may_see(&r, &a.id)).map(|a| uri(&a.id)).collect();
    Ok(collection("Accounts Collection", ids))
}

async fn one(r: Req) -> RfResult<Value> {
    let id = r.param(0);
    if !may_see(&r, id) {
        // Not revealing whether another account exists: the registry grants ConfigureSelf only on one's own.
        return Err(if r.keel.accounts.get(id).is_some() { RfError::forbidden() } else { RfError::resource_not_found("ManagerAccount", id) });
    }
    let a = r.keel.accounts.get(id).ok_or_else(|| RfError::resource_not_found("ManagerAccount", id))?;
    Ok(account_json(&r, &a))
}

async fn hash(r: &Req, user: &str, password: &str) -> RfResult<String> {
    r.keel.accounts.check_password(user, password)?;
    let k = r.keel.clone();
    let pw = password.to_string();
    actix_web::web::block(move || k.accounts.hash_password(&pw)).await.map_err(RfError::internal)?
}

fn valid_user_name(name: &str) -> bool {
    name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) && !name.starts_with(['.', '-'])
}

async fn create(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    let user = b["UserName"].as_str().unwrap_or_default();
    if !valid_user_name(user) {
        return Err(RfError::bad_request(&base::PROPERTY_VALUE_FORMAT_ERROR, &[user, "UserName"]));
    }
    if r.keel.accounts.by_name(user).is_some() {
        return Err(RfError::new(
            StatusCode::CONFLICT,
            Message::base(&base::RESOURCE_ALREADY_EXISTS, &["ManagerAccount", "UserName", user]).related("UserName"),
        ));
    }
    let h = hash(&r, user, b["Password"].as_str().unwrap_or_default()).await?;
    let a = r.keel.accounts.create(
        user,
        h,
        b["RoleId"].as_str().unwrap_or("ReadOnly"),
        b.get("Enabled").and_then(Value::as_bool).unwrap_or(true),
        b.get("PasswordChangeRequired").and_then(Value::as_bool).unwrap_or(false),
    )?;
    log::info!("account {} ({}) created by {}", a.user_name, a.role_id, r.principal().user);
    let mut body = account_json(&r, &a);
    body["@odata.id"] = json!(uri(&a.id));
    body["@odata.type"] = json!(types::MANAGER_ACCOUNT.odata_type());
    Ok(Reply::created(uri(&a.id), body))
}

async fn patch_account(r: Req, b: Map<String, Value>) -> RfResult<()> {
    let id = r.param(0).to_string();
    let p = r.principal().clone();
    let admin = p.privs.has(Privilege::ConfigureUsers);
    // Until the password is changed, the password is the only thing that may change.
    if p.password_change_required && b.keys().any(|k| k != "Password") {
        return Err(RfError::new(StatusCode::FORBIDDEN, Message::base(&base::PASSWORD_CHANGE_REQUIRED, &[&uri(&p.account_id)])));
    }
    // Without ConfigureUsers only one's own password may change (the registry's property override).
    if !admin && (p.account_id != id || b.keys().any(|k| k != "Password")) {
        return Err(RfError::forbidden());
    }
    let current = r.keel.accounts.get(&id).ok_or_else(|| RfError::resource_not_found("ManagerAccount", &id))?;
    let new_name = b.get("UserName").and_then(Value::as_str).unwrap_or(&current.user_name).to_string();
    if !valid_user_name(&new_name) {
        return Err(RfError::bad_request(&base::PROPERTY_VALUE_FORMAT_ERROR, &[&new_name, "UserName"]));
    }
    if b.get("Locked") == Some(&Value::Bool(true)) {
        return Err(RfError::not_in_list(&Value::Bool(true), "Locked"));
    }
    if let Some(role_id) = b.get("RoleId").and_then(Value::as_str) {
        if role(role_id).is_none() {
            return Err(RfError::not_in_list(&b["RoleId"], "RoleId"));
        }
        // Never leave the service without an enabled Administrator.
        if current.role_id == "Administrator" && role_id != "Administrator" && last_admin(&r, &id) {
            return Err(RfError::new(StatusCode::BAD_REQUEST, Message::base(&base::RESOURCE_IN_USE, &[]).related("RoleId")));
        }
    }
    if b.get("Enabled") == Some(&Value::Bool(false)) && current.role_id == "Administrator" && last_admin(&r, &id) {
        return Err(RfError::new(StatusCode::BAD_REQUEST, Message::base(&base::RESOURCE_IN_USE, &[]).related("Enabled")));
    }
    let new_hash = match b.get("Password").and_then(Value::as_str) {
        Some(pw) => Some(hash(&r, &new_name, pw).await?),
        None => None,
    };
    let a = r.keel.accounts.update(&id, |a| {
        a.user_name = new_name.clone();
        if let Some(h) = new_hash {
            a.password_hash = h;
            // A new password set by the account itself satisfies PasswordChangeRequired.
            if p.account_id == a.id {
                a.password_change_required = false;
            }
        }
        if let Some(v) = b.get("RoleId").and_then(Value::as_str) {
            a.role_id = v.to_string();
        }
        if let Some(v) = b.get("Enabled").and_then(Value::as_bool) {
            a.enabled = v;
        }
        if let Some(v) = b.get("PasswordChangeRequired").and_then(Value::as_bool) {
            a.password_change_required = v;
        }
        if b.get("Locked") == Some(&Value::Bool(false)) {
            a.locked = false;
            a.locked_until = 0;
            a.failures = 0;
        }
        Ok(())
    })?;
    // A changed password, role or name ends the account's other sessions.
    if b.contains_key("Password") || b.contains_key("RoleId") || b.contains_key("UserName") || a.enabled == false {
        let keep = p.session_id.clone();
        r.keel.sessions.remove_where(|s| s.account_id == a.id && Some(&s.id) != keep.as_ref());
    }
    log::info!("account {} modified by {}", a.user_name, p.user);
    Ok(())
}

fn last_admin(r: &Req, id: &str) -> bool {
    !r.keel.accounts.list().iter().any(|a| a.id != id && a.enabled && a.role_id == "Administrator")
}

async fn remove(r: Req) -> RfResult<Reply> {
    let id = r.param(0).to_string();
    let a = r.keel.accounts.get(&id).ok_or_else(|| RfError::resource_not_found("ManagerAccount", &id))?;
    if a.role_id == "Administrator" && last_admin(&r, &id) {
        return Err(RfError::new(StatusCode::BAD_REQUEST, Message::base(&base::RESOURCE_CANNOT_BE_DELETED, &[])));
    }
    r.keel.accounts.delete(&id)?;
    r.keel.sessions.remove_where(|s| s.account_id == id);
    log::info!("account {} deleted by {}", a.user_name, r.principal().user);
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}

async fn roles(_: Req) -> RfResult<Value> {
    Ok(collection("Roles Collection", ROLES.iter().map(|r| format!("/redfish/v1/AccountService/Roles/{}", r.id))))
}

async fn one_role(r: Req) -> RfResult<Value> {
    let id = r.param(0);
    let role = role(id).ok_or_else(|| RfError::resource_not_found("Role", id))?;
    Ok(json!({
        "Id": role.id,
        "Name": format!("{} Role", role.id),
        "Description": role.description,
        "RoleId": role.id,
        "IsPredefined": true,
        "AssignedPrivileges": role.privileges.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "OemPrivileges": [],
    }))
}
