//! The protocol engine of DSP0266 around every handler: routing, authentication, privileges,
//! methods and `Allow`, request bodies, conditional requests, query options, `$expand`,
//! collections and paging, ETags, HTML, and the events that changes emit.

use super::{body_use, GetKind, Reply, Req, Route, Tree};
use crate::app::Keel;
use crate::auth::{Principal, VerifyOutcome};
use crate::messages::{base, resource_event, Message, RfError, RfResult};
use crate::privilege::Requirement;
use crate::protocol::body::{parse_object, plan_patch, validate};
use crate::protocol::query::{self, apply_select, Expand, ExpandKind, Query};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use base64::Engine;
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use std::hash::Hasher;
use std::sync::Arc;

pub struct Server {
    pub keel: Arc<Keel>,
    pub tree: Arc<Tree>,
    /// Serialises conditional writes so that `If-Match` is checked and applied atomically.
    pub write_gate: tokio::sync::Mutex<()>,
}

/// The single actix handler: every request of the service comes through here.
/// (actix's HTTP/1 codec sends no body for HEAD, with the headers GET would have.)
pub async fn dispatch(http: HttpRequest, payload: web::Payload, srv: web::Data<Server>) -> HttpResponse {
    let mut resp = match handle(&http, payload, &srv).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let h = resp.headers_mut();
    h.insert(header::HeaderName::from_static("odata-version"), header::HeaderValue::from_static("4.0"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    h.insert(header::STRICT_TRANSPORT_SECURITY, header::HeaderValue::from_static("max-age=31536000"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    }
    resp
}

pub fn error_response(e: &RfError) -> HttpResponse {
    let mut b = HttpResponse::build(e.status);
    for (k, v) in &e.headers {
        b.insert_header((*k, v.as_str()));
    }
    b.content_type("application/json; charset=utf-8").body(serde_json::to_vec(&e.body()).unwrap_or_default())
}

/// Normalise a request path: percent-decoded, no trailing slash, `/redfish/v1/` → `/redfish/v1`.
pub fn normalize(path: &str) -> String {
    let p = query::decode(&path.replace('+', "%2B"));
    let p = p.trim_end_matches('/');
    if p.is_empty() { "/".into() } else { p.to_string() }
}

async fn authenticate(keel: &Arc<Keel>, http: &HttpRequest) -> RfResult<Option<Principal>> {
    if let Some(tok) = http.headers().get("X-Auth-Token") {
        let tok = tok.to_str().map_err(|_| RfError::unauthorized())?;
        let s = keel.sessions.lookup(tok).ok_or_else(RfError::bad_credentials)?;
        let a = keel.accounts.get(&s.account_id).filter(|a| a.enabled).ok_or_else(RfError::unauthorized)?;
        return keel.accounts.principal_for(&a, Some(s.id.clone())).map(Some).ok_or_else(RfError::unauthorized);
    }
    if let Some(auth) = http.headers().get(header::AUTHORIZATION) {
        let auth = auth.to_str().map_err(|_| RfError::unauthorized())?;
        let (scheme, rest) = auth.split_once(' ').ok_or_else(RfError::unauthorized)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(RfError::unauthorized());
        }
        let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| RfError::unauthorized())?;
        let text = String::from_utf8(raw).map_err(|_| RfError::unauthorized())?;
        let (user, pass) = text.split_once(':').ok_or_else(RfError::unauthorized)?;
        if let Some(p) = keel.accounts.verify_cached(user, pass) {
            return Ok(Some(p));
        }
        let (k, u, pw) = (keel.clone(), user.to_string(), pass.to_string());
        return match web::block(move || k.accounts.verify(&u, &pw)).await {
            Ok(VerifyOutcome::Ok(p)) => Ok(Some(p)),
            Ok(VerifyOutcome::Busy) => Err(RfError::busy(1)),
            _ => Err(RfError::bad_credentials()),
        };
    }
    if let Some(p) = crate::tls::client_principal(keel, http) {
        return Ok(Some(p));
    }
    Ok(None)
}

/// Whether an account that must change its password may make this request anyway.
fn allowed_before_password_change(p: &Principal, method: &Method, path: &str) -> bool {
    let own = format!("/redfish/v1/AccountService/Accounts/{}", p.account_id);
    let own_session = p.session_id.as_ref().map(|s| format!("/redfish/v1/SessionService/Sessions/{s}"));
    (path == own && (method == Method::GET || method == Method::HEAD || method == Method::PATCH))
        || (Some(path) == own_session.as_deref() && method == Method::DELETE)
}

async fn handle(http: &HttpRequest, payload: web::Payload, srv: &Server) -> RfResult<HttpResponse> {
    let keel = &srv.keel;
    let path = normalize(http.path());
    let method = http.method().clone();
    let found = srv.tree.find(&path);

    let requirement = match (&found, &method) {
        (Some((r, _)), m) if *m == Method::GET || *m == Method::HEAD => r.get.as_ref().map(|o| o.req),
        (Some((r, _)), &Method::PATCH) => r.patch.as_ref().map(|o| o.req),
        (Some((r, _)), &Method::POST) => r.post.as_ref().map(|o| o.req),
        (Some((r, _)), &Method::DELETE) => r.delete.as_ref().map(|o| o.req),
        _ => None,
    };
    let public_route = matches!(&found, Some((r, _)) if matches!(r.get.as_ref().map(|g| g.req), Some(Requirement::NoAuth)));
    let principal = match requirement {
        // A public resource expanded with credentials shows what they may read.
        Some(Requirement::NoAuth) if (method == Method::GET || method == Method::HEAD) && http.query_string().contains("expand") => {
            authenticate(keel, http).await.ok().flatten()
        }
        Some(Requirement::NoAuth) => None,
        // Unsupported methods on public resources are answered without authentication.
        None if public_route => None,
        _ => authenticate(keel, http).await?,
    };
    let Some((route, params)) = found else {
        if principal.is_none() {
            return Err(RfError::unauthorized());
        }
        return Err(RfError::not_found(&path));
    };
    let Some(requirement) = requirement else {
        if principal.is_none() && !public_route {
            return Err(RfError::unauthorized());
        }
        return Err(RfError::method_not_allowed(route.allow()));
    };
    if let Requirement::AnyOf(_) = requirement {
        let p = principal.as_ref().ok_or_else(RfError::unauthorized)?;
        if !requirement.satisfied_by(p.privs) {
            return Err(RfError::forbidden());
        }
        if p.password_change_required && !allowed_before_password_change(p, &method, &path) {
            let own = format!("/redfish/v1/AccountService/Accounts/{}", p.account_id);
            return Err(RfError::new(StatusCode::FORBIDDEN, Message::base(&base::PASSWORD_CHANGE_REQUIRED, &[&own])));
        }
    }
    if let Some(v) = http.headers().get("OData-Version") {
        if v.as_bytes() != b"4.0" {
            let h = format!("OData-Version: {}", String::from_utf8_lossy(v.as_bytes()));
            return Err(RfError::new(StatusCode::PRECONDITION_FAILED, Message::base(&base::HEADER_INVALID, &[&h])));
        }
    }
    let req = Req { keel: keel.clone(), http: http.clone(), path: path.clone(), params, principal };

    match method {
        Method::GET | Method::HEAD => get(srv, route, req).await,
        Method::PATCH => patch(srv, route, req, payload).await,
        Method::POST => post(srv, route, req, payload).await,
        Method::DELETE => delete(srv, route, req).await,
        _ => Err(RfError::method_not_allowed(route.allow())),
    }
}

// ------------------------------------------------------------------ GET

/// Feeds serialised JSON straight into a hasher, without building the bytes.
struct HashWriter(std::collections::hash_map::DefaultHasher);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A strong ETag: a hash of the resource as served (without its own `@odata.etag`).
pub fn etag_of(v: &Value) -> String {
    let mut w = HashWriter(std::collections::hash_map::DefaultHasher::new());
    let _ = serde_json::to_writer(&mut w, v);
    format!("\"{:016x}\"", w.0.finish())
}

/// Add `@odata.etag` (equal to the ETag header) to a resource that has a Redfish type.
fn with_etag(route: &Route, mut v: Value, etag: &str) -> Value {
    if route.rtype.is_some() {
        if let Value::Object(m) = &mut v {
            m.insert("@odata.etag".into(), Value::String(etag.to_string()));
        }
    }
    v
}

fn etag_matches(header_value: &str, etag: &str) -> bool {
    header_value.split(',').map(str::trim).any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

/// Put `@odata.id` and `@odata.type` first, as every resource carries them (inserted in place,
/// not by rebuilding the map: this runs for every resource of an `$expand`).
fn finish(route: &Route, path: &str, v: Value) -> Value {
    match (v, route.rtype) {
        (Value::Object(mut m), Some(t)) => {
            if !m.contains_key("@odata.type") {
                m.shift_insert(0, "@odata.type".into(), Value::String(t.odata_type()));
            }
            if !m.contains_key("@odata.id") {
                m.shift_insert(0, "@odata.id".into(), Value::String(path.to_string()));
            }
            Value::Object(m)
        }
        (other, _) => other,
    }
}

/// A JSON resource exactly as stored, before query options.
async fn resource(route: &Route, req: Req) -> RfResult<Value> {
    match route.get.as_ref().map(|g| &g.kind) {
        Some(GetKind::Json(f)) => {
            let path = req.path.clone();
            Ok(finish(route, &path, f(req).await?))
        }
        _ => Err(RfError::method_not_allowed(route.allow())),
    }
}

/// GET a resource on behalf of the same principal (for `$expand`, `only`, `$filter`).
fn internal_get(srv: &Server, base: &Req, path: String) -> LocalBoxFuture<'static, Option<Value>> {
    let tree = srv.tree.clone();
    let mut req = base.clone();
    Box::pin(async move {
        let (route, params) = tree.find(&path)?;
        let g = route.get.as_ref()?;
        if let Requirement::AnyOf(_) = g.req {
            if !g.req.satisfied_by(req.principal.as_ref()?.privs) {
                return None;
            }
        }
        req.path = path;
        req.params = params;
        resource(route, req).await.ok()
    })
}

fn is_link(v: &Value) -> Option<&str> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get("@odata.id").and_then(Value::as_str),
        _ => None,
    }
}

/// Replace navigation links by the resources they name (DSP0266 §7.3.3).
fn expand<'a>(srv: &'a Server, req: &'a Req, v: &'a mut Value, e: Expand, in_links: bool) -> LocalBoxFuture<'a, ()> {
    Box::pin(async move {
        match v {
            Value::Object(m) => {
                for (k, child) in m.iter_mut() {
                    if k.starts_with('@') || k == "Actions" || k == "Oem" {
                        continue;
                    }
                    let under_links = in_links || k == "Links";
                    expand_value(srv, req, child, e, under_links).await;
                }
            }
            Value::Array(items) => {
                for child in items.iter_mut() {
                    expand_value(srv, req, child, e, in_links).await;
                }
            }
            _ => {}
        }
    })
}

fn expand_value<'a>(srv: &'a Server, req: &'a Req, child: &'a mut Value, e: Expand, in_links: bool) -> LocalBoxFuture<'a, ()> {
    Box::pin(async move {
        if let Some(uri) = is_link(child) {
            let wanted = match e.kind {
                ExpandKind::All => true,
                ExpandKind::NoLinks => !in_links,
                ExpandKind::Links => in_links,
            };
            if !wanted || uri.contains('#') {
                return;
            }
            if let Some(mut got) = internal_get(srv, req, uri.to_string()).await {
                if e.levels > 1 {
                    expand(srv, req, &mut got, Expand { kind: e.kind, levels: e.levels - 1 }, false).await;
                }
                *child = got;
            }
        } else {
            expand(srv, req, child, e, in_links).await;
        }
    })
}

/// Apply `$filter`, `$skip`, `$top` and server-side paging to a collection.
async fn page(srv: &Server, req: &Req, v: &mut Value, q: &Query) {
    let Some(Value::Array(members)) = v.get_mut("Members").map(std::mem::take) else { return };
    let mut members = members;
    if let Some(f) = &q.filter {
        let mut kept = vec![];
        for m in members {
            let full = match is_link(&m) {
                Some(uri) => internal_get(srv, req, uri.to_string()).await,
                None => Some(m.clone()),
            };
            if full.map_or(false, |full| f.matches(&full)) {
                kept.push(m);
            }
        }
        members = kept;
    }
    let total = members.len();
    let skip = q.skip.unwrap_or(0).min(total);
    let want = q.top.unwrap_or(usize::MAX).min(total - skip);
    let take = want.min(srv.keel.cfg.page_size);
    let page: Vec<Value> = members.into_iter().skip(skip).take(take).collect();
    v["Members"] = Value::Array(page);
    v["Members@odata.count"] = json!(total);
    if take < want {
        // The next page keeps every other query option ($filter, $select, $expand).
        let mut next = format!("{}?$skip={}", req.path, skip + take);
        if q.top.is_some() {
            next.push_str(&format!("&$top={}", want - take));
        }
        for part in req.http.query_string().split('&').filter(|p| !p.is_empty()) {
            let name = query::decode(part.split('=').next().unwrap_or(""));
            if name != "$skip" && name != "$top" {
                next.push('&');
                next.push_str(part);
            }
        }
        if let Some(Value::Object(m)) = Some(&mut *v) {
            m.insert("Members@odata.nextLink".into(), Value::String(next));
        }
    }
}

pub fn wants_html(http: &HttpRequest) -> bool {
    let Some(accept) = http.headers().get(header::ACCEPT).and_then(|a| a.to_str().ok()) else { return false };
    let q_of = |ty: &str| -> Option<f32> {
        accept.split(',').find_map(|part| {
            let mut it = part.split(';');
            let t = it.next()?.trim();
            if t != ty {
                return None;
            }
            let q = it.find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse().ok())).unwrap_or(1.0);
            Some(q)
        })
    };
    match (q_of("text/html"), q_of("application/json")) {
        (Some(h), Some(j)) => h > j,
        (Some(h), None) => h > 0.0,
        _ => false,
    }
}

async fn get(srv: &Server, route: &Route, req: Req) -> RfResult<HttpResponse> {
    let g = route.get.as_ref().expect("checked");
    let raw_q = req.http.query_string().to_string();
    let f = match &g.kind {
        GetKind::Raw { f, content_type } => {
            return match f(req).await? {
                Reply::Raw(r) => Ok(r),
                Reply::Json { status, body, headers } => {
                    let mut b = HttpResponse::build(status);
                    for (k, v) in headers {
                        b.insert_header((k, v));
                    }
                    Ok(b.content_type(*content_type).body(body.to_string()))
                }
                Reply::Empty(s) => Ok(HttpResponse::build(s).finish()),
            };
        }
        GetKind::Json(f) => f,
    };
    let q = query::parse(&raw_q)?;
    let http = req.http.clone();
    let path = req.path.clone();
    let full = finish(route, &path, f(req.clone()).await?);
    let is_collection = full.get("Members").map_or(false, Value::is_array);
    if !is_collection && (q.top.is_some() || q.skip.is_some() || q.filter.is_some() || q.only) {
        return Err(RfError::bad_request(&base::QUERY_NOT_SUPPORTED_ON_RESOURCE, &[]));
    }
    let etag = etag_of(&full);
    if let Some(inm) = http.headers().get(header::IF_NONE_MATCH).and_then(|h| h.to_str().ok()) {
        if etag_matches(inm, &etag) {
            return Ok(HttpResponse::NotModified().insert_header((header::ETAG, etag)).finish());
        }
    }
    let big = is_collection && full["Members"].as_array().map_or(0, Vec::len) > srv.keel.cfg.page_size;
    let full = with_etag(route, full, &etag);
    let (body, bytes) = if q.is_empty() && !big {
        (None, serde_json::to_vec(&full).map_err(RfError::internal)?)
    } else {
        let mut v = full;
        if q.only {
            let members = v["Members"].as_array().cloned().unwrap_or_default();
            if members.len() == 1 {
                if let Some(uri) = is_link(&members[0]) {
                    if let Some(m) = internal_get(srv, &req, uri.to_string()).await {
                        v = m;
                    }
                }
            }
        } else if is_collection {
            page(srv, &req, &mut v, &q).await;
        }
        if let Some(e) = q.expand {
            expand(srv, &req, &mut v, e, false).await;
        }
        if let Some(sel) = &q.select {
            apply_select(&mut v, sel);
        }
        let b = serde_json::to_vec(&v).map_err(RfError::internal)?;
        (Some(v), b)
    };
    let mut r = HttpResponse::Ok();
    r.insert_header((header::ETAG, etag)).insert_header((header::ALLOW, route.allow()));
    if let Some(t) = route.rtype {
        r.insert_header((header::LINK, format!("</redfish/v1/JsonSchemas/{}>; rel=describedby", t.name)));
    }
    if wants_html(&http) {
        let v = match body {
            Some(v) => v,
            None => serde_json::from_slice(&bytes).map_err(RfError::internal)?,
        };
        return Ok(r
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'"))
            .body(crate::html::render(&path, &v, route)));
    }
    Ok(r.content_type("application/json; charset=utf-8").body(bytes))
}

// ------------------------------------------------------------------ bodies

async fn read_body(srv: &Server, http: &HttpRequest, mut payload: web::Payload) -> RfResult<web::Bytes> {
    let max = srv.keel.cfg.max_body;
    let too_large = || RfError::new(StatusCode::PAYLOAD_TOO_LARGE, Message::base(&base::PAYLOAD_TOO_LARGE, &[]));
    if let Some(len) = http.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()) {
        if len > max {
            return Err(too_large());
        }
    }
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| RfError::bad_request(&base::UNRECOGNIZED_REQUEST_BODY, &[]))?;
        if buf.len() + chunk.len() > max {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn check_content_type(http: &HttpRequest, body: &[u8]) -> RfResult<()> {
    if body.is_empty() {
        return Ok(());
    }
    match http.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        None => Ok(()),
        Some(ct) if ct.split(';').next().map(str::trim).map_or(false, |t| t.eq_ignore_ascii_case("application/json")) => Ok(()),
        Some(ct) => Err(RfError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, Message::base(&base::HEADER_INVALID, &[&format!("Content-Type: {ct}")]))),
    }
}

/// `If-Match` against the resource's current ETag (412 on mismatch).
async fn check_if_match(route: &Route, req: &Req) -> RfResult<Option<Value>> {
    let Some(im) = req.header("If-Match").map(str::to_string) else { return Ok(None) };
    let current = resource(route, req.clone()).await?;
    let etag = etag_of(&current);
    if !etag_matches(&im, &etag) {
        return Err(RfError::new(StatusCode::PRECONDITION_FAILED, Message::base(&base::PRECONDITION_FAILED, &[])));
    }
    Ok(Some(current))
}

fn resource_type_of(srv: &Server, uri: &str) -> String {
    srv.tree.find(uri).and_then(|(r, _)| r.rtype).map(|t| t.name.to_string()).unwrap_or_default()
}

async fn patch(srv: &Server, route: &Route, req: Req, payload: web::Payload) -> RfResult<HttpResponse> {
    let op = route.patch.as_ref().expect("checked");
    let bytes = read_body(srv, &req.http, payload).await?;
    check_content_type(&req.http, &bytes)?;
    let body = parse_object(&bytes)?;
    // If-Match comparison and the write are one atomic step.
    let gate = srv.write_gate.lock().await;
    let current = match check_if_match(route, &req).await? {
        Some(c) => c,
        None => resource(route, req.clone()).await?,
    };
    let plan = plan_patch(op.props, body, &current)?;
    (op.f)(req.clone(), plan.apply).await?;
    let mut after = resource(route, req.clone()).await?;
    drop(gate);
    if after != current {
        srv.keel.events.resource_event(&resource_event::RESOURCE_CHANGED, &req.path, &resource_type_of(srv, &req.path), &[]);
    }
    let etag = etag_of(&after);
    after = with_etag(route, after, &etag);
    if !plan.not_writable.is_empty() {
        after["@Message.ExtendedInfo"] = Value::Array(plan.not_writable.iter().map(Message::to_json).collect());
    }
    Ok(HttpResponse::Ok().insert_header((header::ETAG, etag)).content_type("application/json; charset=utf-8").body(after.to_string()))
}

fn reply_response(r: Reply) -> HttpResponse {
    match r {
        Reply::Json { status, body, headers } => {
            let mut b: HttpResponseBuilder = HttpResponse::build(status);
            for (k, v) in headers {
                b.insert_header((k, v));
            }
            b.content_type("application/json; charset=utf-8").body(body.to_string())
        }
        Reply::Empty(s) => HttpResponse::build(s).finish(),
        Reply::Raw(r) => r,
    }
}

async fn post(srv: &Server, route: &Route, req: Req, payload: web::Payload) -> RfResult<HttpResponse> {
    let op = route.post.as_ref().expect("checked");
    if op.present.is_some_and(|p| !p(&req.keel)) {
        return Err(RfError::not_found(&req.path));
    }
    let f = match &op.f {
        super::PostFn::Stream { f, .. } => return Ok(reply_response(f(req, payload).await?)),
        super::PostFn::Json(f) => f,
    };
    let bytes = read_body(srv, &req.http, payload).await?;
    check_content_type(&req.http, &bytes)?;
    let body = if bytes.iter().all(|b| b.is_ascii_whitespace()) && op.action.is_some() { Map::new() } else { parse_object(&bytes)? };
    if let Some(spec) = op.body {
        validate(body_use(op), spec, &body)?;
    }
    let _gate = match req.header("If-Match") {
        Some(_) => Some(srv.write_gate.lock().await),
        None => None,
    };
    if route.get.is_some() {
        check_if_match(route, &req).await?;
    }
    let reply = f(req.clone(), body).await?;
    if let Reply::Json { status, headers, .. } = &reply {
        if *status == StatusCode::CREATED {
            if let Some((_, loc)) = headers.iter().find(|(k, _)| *k == "Location") {
                srv.keel.events.resource_event(&resource_event::RESOURCE_CREATED, loc, &resource_type_of(srv, loc), &[]);
            }
        }
    }
    Ok(reply_response(reply))
}

async fn delete(srv: &Server, route: &Route, req: Req) -> RfResult<HttpResponse> {
    let op = route.delete.as_ref().expect("checked");
    let _gate = srv.write_gate.lock().await;
    if route.get.is_some() {
        check_if_match(route, &req).await?;
    }
    let rtype = resource_type_of(srv, &req.path);
    let path = req.path.clone();
    let reply = (op.f)(req).await?;
    // A DELETE of what is not a resource (a task monitor: it cancels the task) removes none.
    if route.rtype.is_some() {
        srv.keel.events.resource_event(&resource_event::RESOURCE_REMOVED, &path, &rtype, &[]);
    }
    Ok(reply_response(reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn normalises_paths() {
        assert_eq!(normalize("/redfish/v1/"), "/redfish/v1");
        assert_eq!(normalize("/redfish/v1/%24metadata"), "/redfish/v1/$metadata");
        assert_eq!(normalize("/"), "/");
    }
    #[test]
    fn etags_compare_weak_and_star() {
        assert!(etag_matches("W/\"ab\"", "\"ab\""));
        assert!(etag_matches("\"x\", \"ab\"", "\"ab\""));
        assert!(etag_matches("*", "\"ab\""));
        assert!(!etag_matches("\"x\"", "\"ab\""));
    }
}
