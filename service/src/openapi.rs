//! The OpenAPI document, generated with utoipa from the route table itself: every route, every
//! method, the privileges it needs, the body schemas (from the same specs that validate bodies)
//! and the DMTF JSON Schema of every resource.

use crate::privilege::Requirement;
use crate::protocol::body::{Prop, Ty};
use crate::tree::{GetKind, Tree};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, ResponseBuilder, ResponsesBuilder};

const ERROR_REF: &str = "http://redfish.dmtf.org/schemas/v1/redfish-error.v1_0_2.json#/definitions/RedfishError";

fn ty_schema(ty: &Ty) -> RefOr<Schema> {
    let o = match ty {
        Ty::Bool => ObjectBuilder::new().schema_type(Type::Boolean),
        Ty::Int { min, max } => ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(*min as f64)).maximum(Some(*max as f64)),
        Ty::Str { min, max } => ObjectBuilder::new().schema_type(Type::String).min_length(Some(*min)).max_length(Some(*max)),
        Ty::Secret { max } => ObjectBuilder::new().schema_type(Type::String).max_length(Some(*max)).format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Password))),
        Ty::Enum(vals) => ObjectBuilder::new().schema_type(Type::String).enum_values(Some(vals.iter().copied())),
        Ty::Uri => ObjectBuilder::new().schema_type(Type::String).format(Some(utoipa::openapi::SchemaFormat::Custom("uri".into()))),
        Ty::StrList { max_items } => {
            return ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)).max_items(Some(*max_items)).into();
        }
        Ty::SecretList { max_items, max } => {
            let item = ObjectBuilder::new().schema_type(Type::String).max_length(Some(*max)).format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Password)));
            return ArrayBuilder::new().items(item).max_items(Some(*max_items)).into();
        }
        Ty::EnumList(vals) => {
            return ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(vals.iter().copied()))).into();
        }
        Ty::LinkList => {
            return ArrayBuilder::new()
                .items(ObjectBuilder::new().property("@odata.id", ObjectBuilder::new().schema_type(Type::String)).required("@odata.id"))
                .into();
        }
        Ty::StrMap => ObjectBuilder::new().additional_properties(Some(ObjectBuilder::new().schema_type(Type::String))),
        Ty::Obj(props) => return props_schema(props),
    };
    o.into()
}

fn props_schema(props: &[Prop]) -> RefOr<Schema> {
    let mut o = ObjectBuilder::new().additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(false)));
    for p in props {
        let s = match ty_schema(&p.ty) {
            RefOr::T(Schema::Object(obj)) => {
                let mut obj = obj;
                obj.description = Some(p.desc.to_string());
                RefOr::T(Schema::Object(obj))
            }
            other => other,
        };
        o = o.property(p.name, s);
        if p.required {
            o = o.required(p.name);
        }
    }
    o.into()
}

fn privileges_text(r: &Requirement) -> String {
    match r {
        Requirement::NoAuth => "No authentication required.".into(),
        Requirement::AnyOf(alts) => {
            let alts: Vec<String> = alts.iter().map(|all| all.iter().map(|p| p.name()).collect::<Vec<_>>().join(" and ")).collect();
            format!("Privileges (DMTF Privilege Registry): {}.", alts.join(" or "))
        }
    }
}

fn op_id(method: &str, pattern: &str) -> String {
    let mut s = method.to_string();
    for seg in pattern.trim_start_matches("/redfish/v1").split('/') {
        let seg: String = seg.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        if !seg.is_empty() {
            s.push('_');
            s.push_str(&seg);
        }
    }
    s
}

fn security(r: &Requirement) -> Vec<SecurityRequirement> {
    match r {
        Requirement::NoAuth => vec![],
        _ => vec![SecurityRequirement::new("sessionToken", Vec::<String>::new()), SecurityRequirement::new("basicAuth", Vec::<String>::new())],
    }
}

fn error_responses(mut rb: ResponsesBuilder, codes: &[(&str, &str)]) -> ResponsesBuilder {
    for (code, desc) in codes {
        rb = rb.response(
            *code,
            ResponseBuilder::new().description(*desc).content("application/json", ContentBuilder::new().schema(Some(Ref::new(ERROR_REF))).build()),
        );
    }
    rb
}

const COMMON_ERRORS: &[(&str, &str)] = &[("400", "Bad request (Base registry message)"), ("401", "Not authenticated"), ("403", "Insufficient privilege"), ("404", "No such resource")];

pub fn document(tree: &Tree) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for route in &tree.routes {
        let params: Vec<_> = route
            .pattern
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| ParameterBuilder::new().name(p).parameter_in(ParameterIn::Path).required(utoipa::openapi::Required::True).schema(Some(ObjectBuilder::new().schema_type(Type::String))).build())
            .collect();
        let tag = route.entity.to_string();
        if let Some(g) = &route.get {
            let (ct, schema): (&str, RefOr<Schema>) = match (&g.kind, route.rtype) {
                (GetKind::Json(_), Some(t)) => ("application/json", Ref::new(format!("{}#/definitions/{}", t.json_schema_uri().replace("https://", "http://"), t.entity)).into()),
                (GetKind::Json(_), None) => ("application/json", ObjectBuilder::new().into()),
                (GetKind::Raw { content_type, .. }, _) => (*content_type, ObjectBuilder::new().schema_type(Type::String).into()),
            };
            let mut rb = ResponsesBuilder::new().response("200", ResponseBuilder::new().description("The resource").content(ct, ContentBuilder::new().schema(Some(schema)).build()));
            if matches!(g.kind, GetKind::Json(_)) {
                rb = rb.response("304", ResponseBuilder::new().description("Not modified (If-None-Match)"));
            }
            let rb = error_responses(rb, COMMON_ERRORS);
            let mut op = OperationBuilder::new()
                .operation_id(Some(op_id("get", route.pattern)))
                .summary(Some(format!("Read {}", route.rtype.map(|t| t.name).unwrap_or(route.entity))))
                .description(Some(privileges_text(&g.req)))
                .tag(tag.clone())
                .responses(rb.build())
                .securities(Some(security(&g.req)));
            for p in &params {
                op = op.parameter(p.clone());
            }
            paths = paths.path(route.pattern, PathItem::new(HttpMethod::Get, op.build()));
        }
        if let Some(p) = &route.patch {
            let rb = error_responses(
                ResponsesBuilder::new().response("200", ResponseBuilder::new().description("The updated resource; properties that could not be written are reported in @Message.ExtendedInfo")),
                &[("400", "Bad request"), ("401", "Not authenticated"), ("403", "Insufficient privilege"), ("404", "No such resource"), ("412", "ETag mismatch (If-Match)")],
            );
            let mut op = OperationBuilder::new()
                .operation_id(Some(op_id("patch", route.pattern)))
                .summary(Some(format!("Update {}", route.rtype.map(|t| t.name).unwrap_or(route.entity))))
                .description(Some(privileges_text(&p.req)))
                .tag(tag.clone())
                .request_body(Some(RequestBodyBuilder::new().content("application/json", ContentBuilder::new().schema(Some(props_schema(p.props))).build()).required(Some(utoipa::openapi::Required::True)).build()))
                .responses(rb.build())
                .securities(Some(security(&p.req)));
            for prm in &params {
                op = op.parameter(prm.clone());
            }
            paths = paths.path(route.pattern, PathItem::new(HttpMethod::Patch, op.build()));
        }
        if let Some(p) = &route.post {
            let ok = if p.action.is_some() { ("200", "Done; or 204 without a body") } else { ("201", "Created; Location names the new resource") };
            let rb = error_responses(ResponsesBuilder::new().response(ok.0, ResponseBuilder::new().description(ok.1)), COMMON_ERRORS);
            let mut op = OperationBuilder::new()
                .operation_id(Some(op_id("post", route.pattern)))
                .summary(Some(p.summary.to_string()))
                .description(Some(privileges_text(&p.req)))
                .tag(tag.clone())
                .responses(rb.build())
                .securities(Some(security(&p.req)));
            if let Some(b) = p.body {
                op = op.request_body(Some(RequestBodyBuilder::new().content("application/json", ContentBuilder::new().schema(Some(props_schema(b))).build()).build()));
            }
            if let crate::tree::PostFn::Stream { content_type, .. } = &p.f {
                op = op.request_body(Some(RequestBodyBuilder::new().content(*content_type, ContentBuilder::new().build()).required(Some(utoipa::openapi::Required::True)).build()));
            }
            for prm in &params {
                op = op.parameter(prm.clone());
            }
            paths = paths.path(route.pattern, PathItem::new(HttpMethod::Post, op.build()));
        }
        if let Some(d) = &route.delete {
            let rb = error_responses(ResponsesBuilder::new().response("204", ResponseBuilder::new().description("Deleted")), COMMON_ERRORS);
            let mut op = OperationBuilder::new()
                .operation_id(Some(op_id("delete", route.pattern)))
                .summary(Some(format!("Delete {}", route.rtype.map(|t| t.name).unwrap_or(route.entity))))
                .description(Some(privileges_text(&d.req)))
                .tag(tag.clone())
                .responses(rb.build())
                .securities(Some(security(&d.req)));
            for prm in &params {
                op = op.parameter(prm.clone());
            }
            paths = paths.path(route.pattern, PathItem::new(HttpMethod::Delete, op.build()));
        }
    }
    let components = ComponentsBuilder::new()
        .security_scheme("basicAuth", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()))
        .security_scheme("sessionToken", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Auth-Token"))))
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Keel Redfish API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("The Redfish service of a Keel host (keeld). Resource bodies follow the DMTF schemas they reference; request bodies are those keeld accepts."))
                .license(Some(utoipa::openapi::LicenseBuilder::new().name("Apache-2.0").build()))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build()
}

pub fn yaml(tree: &Tree) -> String {
    document(tree).to_yaml().expect("OpenAPI document serialises")
}
