//! The resource tree: every Redfish resource is a `Route` registered by its module with the
//! privileges (DMTF Privilege Registry) each method requires. `dispatch` runs the protocol
//! around the handlers; a handler only turns backend facts into JSON or a request into a change.

pub mod dispatch;

pub mod accounts;
pub mod boot;
pub mod crypt;
pub mod events;
pub mod logs;
pub mod managers;
pub mod metadata;
pub mod pcie;
pub mod power;
pub mod network;
pub mod registries;
pub mod root;
pub mod sensors;
pub mod secureboot;
pub mod sessions;
pub mod storage;
pub mod systems;
pub mod tasks;
pub mod update;
pub mod tpm;

use crate::app::Keel;
use crate::auth::Principal;
use crate::messages::RfResult;
use crate::privilege::Requirement;
use crate::protocol::body::{Prop, Use};
use crate::types::RfType;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;
use serde_json::{json, Map, Value};
use std::future::Future;
use std::sync::Arc;

/// One request as a handler sees it.
#[derive(Clone)]
pub struct Req {
    pub keel: Arc<Keel>,
    pub http: HttpRequest,
    /// The normalised path (no trailing slash).
    pub path: String,
    /// The `{…}` segments of the route pattern, in order.
    pub params: Vec<String>,
    pub principal: Option<Principal>,
}

impl Req {
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }
    pub fn principal(&self) -> &Principal {
        self.principal.as_ref().expect("authenticated route")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.http.headers().get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a handler answers besides a JSON resource.
pub enum Reply {
    Json { status: StatusCode, body: Value, headers: Vec<(&'static str, String)> },
    Empty(StatusCode),
    Raw(HttpResponse),
}

impl Reply {
    pub fn created(location: String, body: Value) -> Reply {
        Reply::Json { status: StatusCode::CREATED, body, headers: vec![("Location", location)] }
    }
    pub fn ok(body: Value) -> Reply {
        Reply::Json { status: StatusCode::OK, body, headers: vec![] }
    }
    /// 202 Accepted for an operation that goes on as a task (DSP0266 "Asynchronous operations"):
    /// `Location` is the task monitor, `Retry-After` how long to wait before polling it, and the
    /// body the Task as it is now.
    pub fn accepted(task: &crate::tasks::TaskHandle) -> Reply {
        Reply::Json {
            status: StatusCode::ACCEPTED,
            body: task.to_json(),
            headers: vec![("Location", task.monitor_uri()), ("Retry-After", crate::tasks::RETRY_AFTER_SECS.to_string())],
        }
    }
    /// 200 with a Base `Success` message, for actions that finish at once.
    pub fn success() -> Reply {
        let m = crate::messages::Message::base(&crate::messages::base::SUCCESS, &[]);
        Reply::ok(json!({ "@Message.ExtendedInfo": [m.to_json()] }))
    }
}

pub type Fut<T> = LocalBoxFuture<'static, RfResult<T>>;
type GetFn = Arc<dyn Fn(Req) -> Fut<Value> + Send + Sync>;
type RawFn = Arc<dyn Fn(Req) -> Fut<Reply> + Send + Sync>;
type BodyFn = Arc<dyn Fn(Req, Map<String, Value>) -> Fut<Reply> + Send + Sync>;
type PatchFn = Arc<dyn Fn(Req, Map<String, Value>) -> Fut<()> + Send + Sync>;
type StreamFn = Arc<dyn Fn(Req, actix_web::web::Payload) -> Fut<Reply> + Send + Sync>;

/// What a POST handler takes.
pub enum PostFn {
    /// The JSON body, read whole (at most `--max-body`) and checked against `PostOp::body`.
    Json(BodyFn),
    /// The request body as it arrives (multipart uploads of any size); `content_type` is what the
    /// OpenAPI document names.
    Stream { f: StreamFn, content_type: &'static str },
}

pub enum GetKind {
    /// A JSON resource: query options, `$expand`, ETag and HTML apply.
    Json(GetFn),
    /// Anything else (`$metadata`, OpenAPI, schema files, the SSE stream).
    Raw { f: RawFn, content_type: &'static str },
}

pub struct GetOp {
    pub req: Requirement,
    pub kind: GetKind,
}
pub struct PatchOp {
    pub req: Requirement,
    pub props: &'static [Prop],
    pub f: PatchFn,
}
pub struct PostOp {
    pub req: Requirement,
    /// The body's schema; `None` accepts an empty body only.
    pub body: Option<&'static [Prop]>,
    pub action: Option<&'static str>,
    pub summary: &'static str,
    /// Whether the target exists at all (e.g. an action of hardware that may be absent): when it
    /// says no, a POST is a 404 before its body is looked at.
    pub present: Option<fn(&Keel) -> bool>,
    pub f: PostFn,
}
pub struct DeleteOp {
    pub req: Requirement,
    pub f: RawFn,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Param(String),
}

pub struct Route {
    pub pattern: &'static str,
    segs: Vec<Seg>,
    /// The Privilege Registry entity whose OperationMap the privileges follow.
    pub entity: &'static str,
    /// The resource's Redfish type, when it is a JSON resource.
    pub rtype: Option<RfType>,
    pub get: Option<GetOp>,
    pub patch: Option<PatchOp>,
    pub post: Option<PostOp>,
    pub delete: Option<DeleteOp>,
}

impl Route {
    /// The methods this route answers, for `Allow`.
    pub fn allow(&self) -> String {
        let mut m = vec![];
        if self.get.is_some() {
            m.push("GET");
            m.push("HEAD");
        }
        if self.patch.is_some() {
            m.push("PATCH");
        }
        if self.post.is_some() {
            m.push("POST");
        }
        if self.delete.is_some() {
            m.push("DELETE");
        }
        m.join(", ")
    }

    fn matches(&self, segs: &[&str]) -> Option<Vec<String>> {
        if segs.len() != self.segs.len() {
            return None;
        }
        let mut params = vec![];
        for (s, p) in segs.iter().zip(&self.segs) {
            match p {
                Seg::Lit(l) if l == s => {}
                Seg::Lit(_) => return None,
                Seg::Param(_) => params.push(s.to_string()),
            }
        }
        Some(params)
    }

    // ---- builder methods: the one place a module declares a resource ----

    /// A JSON resource GET.
    pub fn get<F, Fu>(mut self, req: Requirement, f: F) -> Self
    where
        F: Fn(Req) -> Fu + Send + Sync + 'static,
        Fu: Future<Output = RfResult<Value>> + 'static,
    {
        self.get = Some(GetOp { req, kind: GetKind::Json(Arc::new(move |r| Box::pin(f(r)))) });
        self
    }
    /// A non-JSON GET.
    pub fn get_raw<F, Fu>(mut self, req: Requirement, content_type: &'static str, f: F) -> Self
    where
        F: Fn(Req) -> Fu + Send + Sync + 'static,
        Fu: Future<Output = RfResult<Reply>> + 'static,
    {
        self.get = Some(GetOp { req, kind: GetKind::Raw { f: Arc::new(move |r| Box::pin(f(r))), content_type } });
        self
    }
    pub fn patch<F, Fu>(mut self, req: Requirement, props: &'static [Prop], f: F) -> Self
    where
        F: Fn(Req, Map<String, Value>) -> Fu + Send + Sync + 'static,
        Fu: Future<Output = RfResult<()>> + 'static,
    {
        self.patch = Some(PatchOp { req, props, f: Arc::new(move |r, b| Box::pin(f(r, b))) });
        self
    }
    /// POST creating a member of a collection.
    pub fn create<F, Fu>(mut self, req: Requirement, body: &'static [Prop], summary: &'static str, f: F) -> Self
    where
        F: Fn(Req, Map<String, Value>) -> Fu + Send + Sync + 'static,
        Fu: Future<Output = RfResult<Reply>> + 'static,
    {
        self.post = Some(PostOp { req, body: Some(body), action: None, summary, present: None, f: PostFn::Json(Arc::new(move |r, b| Box::pin(f(r, b)))) });
        self
    }
    /// POST invoking an action (`.../Actions/Type.Name`).
    pub fn action<F, Fu>(mut self, name: &'static str, req: Requirement, body: &'static [Prop], summary: &'static str, f: F) -> Self
    where
        F: Fn(Req, Map<String, Value>) -> Fu + Send + Sync + 'static,
        Fu: Future<Output = RfResult<Reply>> + 'static,
    {
        self.post = Some(PostOp { req, body: Some(body), action: Some(name), summary, present: None, f: PostFn::Json(Arc::new(move |r, b| Box::pin(f(r, b)))) });
        self
    }
    /// POST whose body the handler reads itself, as it arrives (an upload).
    pub fn post_stream<F, Fu>(mut self, req: Requirement, content_type: &'static str, summary: &'static str, f: F) -> Self
    where
        F: Fn(Req, actix_web::web::Payload) -> Fu + Send + Sync + 'static,
        Fu: Future<Output = RfResult<Reply>> + 'static,
    {
        self.post = Some(PostOp { req, body: None, action: None, summary, present: None, f: PostFn::Stream { f: Arc::new(move |r, p| Box::pin(f(r, p))), content_type } });
        self
    }
    /// The POST target exists only while `f` says so.
    pub fn post_present(mut self, f: fn(&Keel) -> bool) -> Self {
        if let Some(p) = self.post.as_mut() {
            p.present = Some(f);
        }
        self
    }
    pub fn delete<F, Fu>(mut self, req: Requirement, f: F) -> Self
    where
        F: Fn(Req) -> Fu + Send + Sync + 'static,
        Fu: Future<Output = RfResult<Reply>> + 'static,
    {
        self.delete = Some(DeleteOp { req, f: Arc::new(move |r| Box::pin(f(r))) });
        self
    }
}

pub fn body_use(op: &PostOp) -> Use<'static> {
    match op.action {
        Some(a) => Use::Action(a),
        None => Use::Create,
    }
}

/// The whole tree.
#[derive(Default)]
pub struct Tree {
    pub routes: Vec<Route>,
    /// Route indexes by segment count: a lookup only tries patterns of the path's length.
    by_len: Vec<Vec<usize>>,
}

impl Tree {
    /// Start declaring a resource. `entity` names the Privilege Registry entry its privileges
    /// follow; `rtype` is its Redfish type (None for actions and raw documents).
    pub fn route(pattern: &'static str, entity: &'static str, rtype: Option<RfType>) -> Route {
        let segs = pattern
            .trim_start_matches('/')
            .split('/')
            .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(p) => Seg::Param(p.to_string()),
                None => Seg::Lit(s.to_string()),
            })
            .collect();
        Route { pattern, segs, entity, rtype, get: None, patch: None, post: None, delete: None }
    }

    pub fn add(&mut self, r: Route) {
        assert!(!self.routes.iter().any(|x| x.segs == r.segs), "route {} registered twice", r.pattern);
        let n = r.segs.len();
        if self.by_len.len() <= n {
            self.by_len.resize(n + 1, vec![]);
        }
        self.by_len[n].push(self.routes.len());
        self.routes.push(r);
    }

    /// Find the route for a normalised path; literal segments win over parameters.
    pub fn find(&self, path: &str) -> Option<(&Route, Vec<String>)> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut best: Option<(&Route, Vec<String>)> = None;
        for r in self.by_len.get(segs.len()).into_iter().flatten().map(|i| &self.routes[*i]) {
            if let Some(p) = r.matches(&segs) {
                if best.as_ref().map_or(true, |(_, bp)| p.len() < bp.len()) {
                    best = Some((r, p));
                }
            }
        }
        best
    }

    /// The whole service.
    pub fn build() -> Tree {
        let mut t = Tree::default();
        root::register(&mut t);
        metadata::register(&mut t);
        sessions::register(&mut t);
        accounts::register(&mut t);
        events::register(&mut t);
        registries::register(&mut t);
        managers::register(&mut t);
        systems::register(&mut t);
        power::register(&mut t);
        update::register(&mut t);
        boot::register(&mut t);
        tasks::register(&mut t);
        sensors::register(&mut t);
        logs::register(&mut t);
        pcie::register(&mut t);
        storage::register(&mut t);
        network::register(&mut t);
        secureboot::register(&mut t);
        tpm::register(&mut t);
        crypt::register(&mut t);
        t
    }
}

/// The tree of this process, built once.
pub fn global() -> &'static Tree {
    static TREE: std::sync::OnceLock<Tree> = std::sync::OnceLock::new();
    TREE.get_or_init(Tree::build)
}

/// Set `v[k]` when the value is known: Redfish leaves unknown properties out rather than null.
pub fn put<T: Into<Value>>(v: &mut Value, k: &str, x: Option<T>) {
    if let Some(x) = x {
        v[k] = x.into();
    }
}

/// The one ComputerSystem (`{ComputerSystemId}` is the first path parameter).
pub fn check_system(r: &Req) -> crate::messages::RfResult<()> {
    if r.param(0) != "system" {
        return Err(crate::messages::RfError::resource_not_found("ComputerSystem", r.param(0)));
    }
    Ok(())
}

/// The one Chassis (`{ChassisId}` is the first path parameter).
pub fn check_chassis(r: &Req) -> crate::messages::RfResult<()> {
    if r.param(0) != "chassis" {
        return Err(crate::messages::RfError::resource_not_found("Chassis", r.param(0)));
    }
    Ok(())
}

/// A link object.
pub fn link(uri: impl Into<String>) -> Value {
    json!({ "@odata.id": uri.into() })
}

/// A resource collection body; paging and `Members@odata.count` are finished by `dispatch`.
pub fn collection(name: &str, members: impl IntoIterator<Item = String>) -> Value {
    let m: Vec<Value> = members.into_iter().map(link).collect();
    json!({ "Name": name, "Members@odata.count": m.len(), "Members": m })
}
