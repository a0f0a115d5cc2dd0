//! Browsable JSON: a resource rendered as an HTML page for a person with a browser. Every
//! `@odata.id` is a link, the path is shown as breadcrumbs, actions are listed with their
//! allowable values. No script, no external resource (the page is served with a strict CSP).

use crate::tree::Route;
use serde_json::Value;

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Properties whose value is a URI a browser can GET (action targets are POST-only: shown as text).
fn is_uri_key(k: &str) -> bool {
    k == "@odata.id" || k.ends_with("@odata.nextLink") || k == "@Redfish.ActionInfo"
}

fn value(out: &mut String, key: &str, v: &Value, depth: usize) {
    match v {
        // A navigation link reads best as the link itself.
        Value::Object(m) if m.len() == 1 && m.get("@odata.id").and_then(Value::as_str).map_or(false, |u| u.starts_with("/redfish")) => {
            let u = m["@odata.id"].as_str().unwrap_or_default();
            out.push_str(&format!("<a href=\"{0}\">{0}</a>", escape(u)));
        }
        Value::Object(m) => {
            out.push_str("<table>");
            for (k, child) in m.iter().filter(|(k, _)| *k != "@odata.etag") {
                out.push_str(&format!("<tr><th>{}</th><td>", escape(k)));
                value(out, k, child, depth + 1);
                out.push_str("</td></tr>");
            }
            out.push_str("</table>");
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("<span class=n>[]</span>");
            }
            out.push_str("<ol>");
            for i in items {
                out.push_str("<li>");
                value(out, key, i, depth + 1);
                out.push_str("</li>");
            }
            out.push_str("</ol>");
        }
        Value::String(s) if is_uri_key(key) && s.starts_with("/redfish") => {
            out.push_str(&format!("<a href=\"{0}\">{0}</a>", escape(s)));
        }
        Value::String(s) => out.push_str(&format!("<span class=s>{}</span>", escape(s))),
        Value::Null => out.push_str("<span class=n>null</span>"),
        other => out.push_str(&format!("<span class=v>{}</span>", escape(&other.to_string()))),
    }
}

fn breadcrumbs(path: &str) -> String {
    let mut out = String::from("<nav>");
    let mut acc = String::new();
    for (i, seg) in path.trim_start_matches('/').split('/').enumerate() {
        acc.push('/');
        acc.push_str(seg);
        if i == 0 {
            continue; // `/redfish` is the version document, not a resource
        }
        if i > 1 {
            out.push_str(" / ");
        }
        out.push_str(&format!("<a href=\"{}\">{}</a>", escape(&acc), escape(seg)));
    }
    out.push_str("</nav>");
    out
}

fn actions(v: &Value) -> String {
    let Some(Value::Object(acts)) = v.get("Actions") else { return String::new() };
    let mut out = String::from("<section class=actions><h2>Actions</h2><ul>");
    for (name, a) in acts.iter().filter(|(k, _)| k.starts_with('#')) {
        let target = a.get("target").and_then(Value::as_str).unwrap_or("");
        out.push_str(&format!("<li><b>{}</b> &mdash; <code>POST {}</code>", escape(name.trim_start_matches('#')), escape(target)));
        if let Value::Object(m) = a {
            let params: Vec<String> = m
                .iter()
                .filter_map(|(k, vals)| {
                    let p = k.strip_suffix("@Redfish.AllowableValues")?;
                    let list: Vec<String> = vals.as_array()?.iter().filter_map(|x| x.as_str().map(escape)).collect();
                    Some(format!("<li>{}: {}</li>", escape(p), list.join(", ")))
                })
                .collect();
            if !params.is_empty() {
                out.push_str(&format!("<ul class=params>{}</ul>", params.join("")));
            }
        }
        out.push_str("</li>");
    }
    out.push_str("</ul></section>");
    out
}

pub fn render(path: &str, v: &Value, route: &Route) -> String {
    let title = v.get("Name").and_then(Value::as_str).unwrap_or(path);
    let mut body = String::new();
    value(&mut body, "", v, 0);
    format!(
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{t} — Keel</title><style>\
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}}nav{{margin-bottom:1em;font-size:15px}}\
table{{border-collapse:collapse;margin:2px 0}}th{{text-align:left;vertical-align:top;padding:2px 8px;background:#f3f3f3;font-weight:600}}\
td{{padding:2px 8px;border-bottom:1px solid #eee}}ol{{margin:0;padding-left:1.5em}}.s{{color:#064}}.v{{color:#04a}}.n{{color:#888}}\
.actions{{margin-top:1em}}code{{background:#f6f6f6;padding:0 3px}}footer{{margin-top:2em;color:#888;font-size:12px}}</style></head>\
<body>{crumbs}<h1>{t}</h1><p class=meta>{ty} &middot; methods: {allow}</p>{actions}<main>{body}</main>\
<footer>Keel Redfish service &middot; the same resource as JSON: <code>Accept: application/json</code></footer></body></html>",
        t = escape(title),
        crumbs = breadcrumbs(path),
        ty = escape(v.get("@odata.type").and_then(Value::as_str).unwrap_or("")),
        allow = escape(&route.allow()),
        actions = actions(v),
        body = body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn links_are_anchors_and_text_is_escaped() {
        let v = serde_json::json!({"Name": "<x>", "Members": [{"@odata.id": "/redfish/v1/Systems/system"}],
            "Actions": {"#Manager.Reset": {"target": "/redfish/v1/Managers/keel/Actions/Manager.Reset", "ResetType@Redfish.AllowableValues": ["GracefulRestart"]}}});
        let r = crate::tree::Tree::route("/redfish/v1/Systems", "ComputerSystemCollection", None);
        let h = render("/redfish/v1/Systems", &v, &r);
        assert!(h.contains("<a href=\"/redfish/v1/Systems/system\">"));
        assert!(h.contains("&lt;x&gt;") && !h.contains("<x>"));
        assert!(h.contains("<a href=\"/redfish/v1\">v1</a>"));
        assert!(!h.contains(">redfish</a>"));
        assert!(!h.contains("<a href=\"/redfish/v1/Managers/keel/Actions/Manager.Reset\">"), "action targets are not GET links");
        assert!(h.contains("ResetType: GracefulRestart"));
    }
}
