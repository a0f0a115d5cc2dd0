//! SessionService: login sessions with `X-Auth-Token`.

use super::{collection, link, Reply, Req, Tree};
use crate::auth::{Session, VerifyOutcome};
use crate::messages::{base, Message, RfError, RfResult};
use crate::privilege::{Privilege, Requirement::NoAuth, CONFIGURE_MANAGER, LOGIN, MANAGER_OR_SELF};
use crate::protocol::body::{Prop, Ty};
use crate::types;
use actix_web::http::StatusCode;
use serde_json::{json, Map, Value};

const SERVICE_PATCH: &[Prop] = &[Prop::new("SessionTimeout", Ty::Int { min: 30, max: 86400 }, "Seconds of inactivity after which a session ends.")];

const CREATE: &[Prop] = &[
    Prop::required("UserName", Ty::Str { min: 1, max: 64 }, "The account to log in as."),
    Prop::required("Password", Ty::Secret { max: 256 }, "The account's password."),
    Prop::nullable("Context", Ty::Str { min: 0, max: 256 }, "A client-supplied string kept with the session."),
];

pub fn register(t: &mut Tree) {
    t.add(
        Tree::route("/redfish/v1/SessionService", "SessionService", Some(types::SESSION_SERVICE))
            .get(LOGIN, service)
            .patch(CONFIGURE_MANAGER, SERVICE_PATCH, patch_service),
    );
    t.add(
        Tree::route("/redfish/v1/SessionService/Sessions", "SessionCollection", Some(types::SESSION_COLLECTION))
            .get(LOGIN, list)
            .create(NoAuth, CREATE, "Log in: create a session and receive its X-Auth-Token", create),
    );
    // DSP0266 also allows POST to the collection's Members.
    t.add(Tree::route("/redfish/v1/SessionService/Sessions/Members", "SessionCollection", None).create(
        NoAuth,
        CREATE,
        "Log in (alternative URI of the Sessions collection)",
        create,
    ));
    t.add(
        Tree::route("/redfish/v1/SessionService/Sessions/{SessionId}", "Session", Some(types::SESSION))
            .get(MANAGER_OR_SELF, one)
            .delete(MANAGER_OR_SELF, remove),
    );
}

async fn service(r: Req) -> RfResult<Value> {
    Ok(json!({
        "Id": "SessionService",
        "Name": "Session Service",
        "Description": "Login sessions",
        "ServiceEnabled": true,
        "SessionTimeout": r.keel.sessions.policy().timeout,
        "Sessions": link("/redfish/v1/SessionService/Sessions"),
        "Status": { "State": "Enabled", "Health": "OK" },
    }))
}

async fn patch_service(r: Req, b: Map<String, Value>) -> RfResult<()> {
    let mut p = r.keel.sessions.policy();
    if let Some(t) = b.get("SessionTimeout").and_then(Value::as_i64) {
        p.timeout = t;
    }
    r.keel.sessions.set_policy(p)
}

fn uri(id: &str) -> String {
    format!("/redfish/v1/SessionService/Sessions/{id}")
}

/// Sessions a principal may see: all with ConfigureManager, else its own.
fn visible(r: &Req, s: &Session) -> bool {
    let p = r.principal();
    p.privs.has(Privilege::ConfigureManager) || s.account_id == p.account_id
}

async fn list(r: Req) -> RfResult<Value> {
    let ids: Vec<String> = r.keel.sessions.list().iter().filter(|s| visible(&r, s)).map(|s| uri(&s.id)).collect();
    Ok(collection("Session Collection", ids))
}

fn session_json(s: &Session) -> Value {
    let mut v = json!({
        "Id": s.id,
        "Name": "User Session",
        "Description": "A login session",
        "UserName": s.user_name,
        "Password": null,
        "SessionType": "Redfish",
        "CreatedTime": chrono::DateTime::from_timestamp(s.created, 0).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "Context": s.context,
    });
    if let Some(o) = &s.origin {
        v["ClientOriginIPAddress"] = json!(o);
    }
    v
}

async fn one(r: Req) -> RfResult<Value> {
    let s = r.keel.sessions.get(r.param(0)).filter(|s| visible(&r, s)).ok_or_else(|| RfError::resource_not_found("Session", r.param(0)))?;
    Ok(session_json(&s))
}

async fn create(r: Req, b: Map<String, Value>) -> RfResult<Reply> {
    let user = b["UserName"].as_str().unwrap_or_default().to_string();
    let pass = b["Password"].as_str().unwrap_or_default().to_string();
    let context = b.get("Context").and_then(Value::as_str).map(str::to_string);
    let k = r.keel.clone();
    let u = user.clone();
    let outcome = actix_web::web::block(move || k.accounts.verify(&u, &pass)).await.map_err(RfError::internal)?;
    let p = match outcome {
        VerifyOutcome::Ok(p) => p,
        VerifyOutcome::Busy => return Err(RfError::busy(1)),
        VerifyOutcome::Denied => return Err(RfError::bad_credentials()),
    };
    let account = r.keel.accounts.get(&p.account_id).ok_or_else(RfError::bad_credentials)?;
    let origin = r.http.peer_addr().map(|a| a.ip().to_string());
    let (s, token) = r.keel.sessions.create(&account, origin, context)?;
    let mut body = session_json(&s);
    body["@odata.id"] = json!(uri(&s.id));
    body["@odata.type"] = json!(types::SESSION.odata_type());
    if account.password_change_required {
        let m = Message::base(&base::PASSWORD_CHANGE_REQUIRED, &[&format!("/redfish/v1/AccountService/Accounts/{}", account.id)]);
        body["@Message.ExtendedInfo"] = json!([m.to_json()]);
    }
    log::info!("session {} opened for {}", s.id, s.user_name);
    Ok(Reply::Json { status: StatusCode::CREATED, body, headers: vec![("Location", uri(&s.id)), ("X-Auth-Token", token)] })
}

async fn remove(r: Req) -> RfResult<Reply> {
    let id = r.param(0).to_string();
    let s = r.keel.sessions.get(&id).ok_or_else(|| RfError::resource_not_found("Session", &id))?;
    // ConfigureSelf covers only one's own sessions.
    if !visible(&r, &s) {
        return Err(RfError::forbidden());
    }
    r.keel.sessions.remove_where(|s| s.id == id);
    log::info!("session {id} closed");
    Ok(Reply::Empty(StatusCode::NO_CONTENT))
}
