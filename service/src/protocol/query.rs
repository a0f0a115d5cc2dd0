//! OData query options of DSP0266 §7.3: `$select`, `only`, `$top`, `$skip`, `$expand`, `$filter`.
//! Expansion needs the resource tree and lives in `tree::dispatch`; everything that works on a
//! single JSON document lives here.

use crate::messages::{base, RfError, RfResult};
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpandKind {
    /// `*`: every navigation property.
    All,
    /// `.`: subordinate resources only (not under `Links`).
    NoLinks,
    /// `~`: only those under `Links`.
    Links,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expand {
    pub kind: ExpandKind,
    pub levels: u32,
}

pub const MAX_EXPAND_LEVELS: u32 = 6;

#[derive(Clone, Debug, Default)]
pub struct Query {
    pub select: Option<Vec<Vec<String>>>,
    pub expand: Option<Expand>,
    pub only: bool,
    pub top: Option<usize>,
    pub skip: Option<usize>,
    pub filter: Option<Filter>,
}

impl Query {
    pub fn is_empty(&self) -> bool {
        self.select.is_none() && self.expand.is_none() && !self.only && self.top.is_none() && self.skip.is_none() && self.filter.is_none()
    }
}

/// Percent-decode a query component (`+` is a space, as browsers and python send it).
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Split a raw query string into decoded (name, value) pairs.
pub fn pairs(qs: &str) -> Vec<(String, String)> {
    qs.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn parse_usize(v: &str, name: &str) -> RfResult<usize> {
    v.parse::<usize>().map_err(|_| {
        RfError::bad_request(&base::QUERY_PARAMETER_VALUE_TYPE_ERROR, &[v, name])
    })
}

/// Parse the query options. Unknown `$` options are 501 (DSP0266 §7.3.1); other unknown
/// parameters are ignored.
pub fn parse(qs: &str) -> RfResult<Query> {
    let mut q = Query::default();
    for (k, v) in pairs(qs) {
        match k.as_str() {
            "$select" => {
                let mut props = vec![];
                for p in v.split(',') {
                    let p = p.trim();
                    if p.is_empty() || !p.split('/').all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "@._#".contains(c))) {
                        return Err(RfError::query_format(&v, "$select"));
                    }
                    props.push(p.split('/').map(str::to_string).collect());
                }
                q.select = Some(props);
            }
            "only" => {
                if !v.is_empty() {
                    return Err(RfError::query_format(&v, "only"));
                }
                q.only = true;
            }
            "$top" => {
                let n = parse_usize(&v, "$top")?;
                if n == 0 {
                    return Err(RfError::bad_request(&base::QUERY_PARAMETER_OUT_OF_RANGE, &[&v, "$top", "1 or more"]));
                }
                q.top = Some(n);
            }
            "$skip" => q.skip = Some(parse_usize(&v, "$skip")?),
            "$expand" => q.expand = Some(parse_expand(&v)?),
            "$filter" => q.filter = Some(Filter::parse(&v)?),
            other if other.starts_with('$') => return Err(RfError::query_unsupported(other)),
            "excerpt" => return Err(RfError::query_unsupported("excerpt")),
            _ => {}
        }
    }
    if q.only && (q.select.is_some() || q.expand.is_some() || q.top.is_some() || q.skip.is_some() || q.filter.is_some()) {
        return Err(RfError::bad_request(&base::QUERY_COMBINATION_INVALID, &[]));
    }
    Ok(q)
}

fn parse_expand(v: &str) -> RfResult<Expand> {
    let (kind, rest) = match v.chars().next() {
        Some('*') => (ExpandKind::All, &v[1..]),
        Some('.') => (ExpandKind::NoLinks, &v[1..]),
        Some('~') => (ExpandKind::Links, &v[1..]),
        _ => return Err(RfError::query_format(v, "$expand")),
    };
    let mut levels = 1;
    if !rest.is_empty() {
        let inner = rest.strip_prefix("($levels=").and_then(|r| r.strip_suffix(')')).ok_or_else(|| RfError::query_format(v, "$expand"))?;
        levels = inner.parse::<u32>().map_err(|_| RfError::query_format(v, "$expand"))?;
        if levels == 0 || levels > MAX_EXPAND_LEVELS {
            return Err(RfError::bad_request(&base::QUERY_PARAMETER_OUT_OF_RANGE, &[inner, "$levels", &format!("1-{MAX_EXPAND_LEVELS}")]));
        }
    }
    Ok(Expand { kind, levels })
}

/// Keep only the selected properties (and the OData annotations), per DSP0266 §7.3.4.
pub fn apply_select(v: &mut Value, select: &[Vec<String>]) {
    if let Value::Object(m) = v {
        let mut out = Map::new();
        for (k, val) in std::mem::take(m) {
            if k.starts_with("@odata.") {
                out.insert(k, val);
                continue;
            }
            let subs: Vec<Vec<String>> = select.iter().filter(|p| p[0] == k).map(|p| p[1..].to_vec()).collect();
            if subs.is_empty() {
                continue;
            }
            if subs.iter().any(|s| s.is_empty()) {
                out.insert(k, val);
            } else {
                let mut val = val;
                match &mut val {
                    Value::Array(items) => items.iter_mut().for_each(|i| apply_select(i, &subs)),
                    other => apply_select(other, &subs),
                }
                out.insert(k, val);
            }
        }
        *m = out;
    }
}

// ---------------------------------------------------------------- $filter

#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cmp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Cmp(Vec<String>, Cmp, Lit),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Lit(Lit),
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = vec![];
    while i < c.len() {
        match c[i] {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    if i >= c.len() {
                        return None;
                    }
                    if c[i] == '\'' {
                        if i + 1 < c.len() && c[i + 1] == '\'' {
                            v.push('\'');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    v.push(c[i]);
                    i += 1;
                }
                out.push(Tok::Lit(Lit::Str(v)));
            }
            ch if ch.is_ascii_digit() || ch == '-' => {
                let st = i;
                i += 1;
                while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.' || c[i] == 'e' || c[i] == 'E') {
                    i += 1;
                }
                let t: String = c[st..i].iter().collect();
                out.push(Tok::Lit(Lit::Num(t.parse().ok()?)));
            }
            ch if ch.is_alphabetic() || ch == '@' || ch == '_' => {
                let st = i;
                while i < c.len() && (c[i].is_alphanumeric() || "@._/#".contains(c[i])) {
                    i += 1;
                }
                let t: String = c[st..i].iter().collect();
                out.push(match t.as_str() {
                    "true" => Tok::Lit(Lit::Bool(true)),
                    "false" => Tok::Lit(Lit::Bool(false)),
                    "null" => Tok::Lit(Lit::Null),
                    _ => Tok::Ident(t),
                });
            }
            _ => return None,
        }
    }
    Some(out)
}

struct P {
    t: Vec<Tok>,
    i: usize,
}

impl P {
    fn peek_ident(&self, w: &str) -> bool {
        matches!(self.t.get(self.i), Some(Tok::Ident(x)) if x == w)
    }
    fn or(&mut self) -> Option<Filter> {
        let mut l = self.and()?;
        while self.peek_ident("or") {
            self.i += 1;
            l = Filter::Or(Box::new(l), Box::new(self.and()?));
        }
        Some(l)
    }
    fn and(&mut self) -> Option<Filter> {
        let mut l = self.unary()?;
        while self.peek_ident("and") {
            self.i += 1;
            l = Filter::And(Box::new(l), Box::new(self.unary()?));
        }
        Some(l)
    }
    fn unary(&mut self) -> Option<Filter> {
        if self.peek_ident("not") {
            self.i += 1;
            return Some(Filter::Not(Box::new(self.unary()?)));
        }
        if self.t.get(self.i) == Some(&Tok::LParen) {
            self.i += 1;
            let f = self.or()?;
            if self.t.get(self.i) != Some(&Tok::RParen) {
                return None;
            }
            self.i += 1;
            return Some(f);
        }
        let prop = match self.t.get(self.i)? {
            Tok::Ident(p) => p.split('/').map(str::to_string).collect(),
            _ => return None,
        };
        let op = match self.t.get(self.i + 1)? {
            Tok::Ident(o) => match o.as_str() {
                "eq" => Cmp::Eq,
                "ne" => Cmp::Ne,
                "gt" => Cmp::Gt,
                "ge" => Cmp::Ge,
                "lt" => Cmp::Lt,
                "le" => Cmp::Le,
                _ => return None,
            },
            _ => return None,
        };
        let lit = match self.t.get(self.i + 2)? {
            Tok::Lit(l) => l.clone(),
            // Enumeration values may be written bare.
            Tok::Ident(s) => Lit::Str(s.clone()),
            _ => return None,
        };
        self.i += 3;
        Some(Filter::Cmp(prop, op, lit))
    }
}

impl Filter {
    pub fn parse(s: &str) -> RfResult<Filter> {
        let bad = || RfError::query_format(s, "$filter");
        let toks = tokenize(s).ok_or_else(bad)?;
        let mut p = P { t: toks, i: 0 };
        let f = p.or().ok_or_else(bad)?;
        if p.i != p.t.len() {
            return Err(bad());
        }
        Ok(f)
    }

    pub fn matches(&self, v: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(v) && b.matches(v),
            Filter::Or(a, b) => a.matches(v) || b.matches(v),
            Filter::Not(a) => !a.matches(v),
            Filter::Cmp(path, op, lit) => {
                let mut cur = v;
                for seg in path {
                    match cur.get(seg) {
                        Some(n) => cur = n,
                        None => return matches!((op, lit), (Cmp::Eq, Lit::Null) ),
                    }
                }
                compare(cur, *op, lit)
            }
        }
    }
}

fn compare(v: &Value, op: Cmp, lit: &Lit) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (v, lit) {
        (Value::String(a), Lit::Str(b)) => Some(a.as_str().cmp(b.as_str())),
        (Value::Number(a), Lit::Num(b)) => a.as_f64().and_then(|a| a.partial_cmp(b)),
        (Value::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Value::Null, Lit::Null) => Some(Ordering::Equal),
        // An array property matches when any element does (e.g. `MessageIds eq 'x'`).
        (Value::Array(items), _) => return items.iter().any(|i| compare(i, op, lit)),
        _ => None,
    };
    match (ord, op) {
        (Some(o), Cmp::Eq) => o == Ordering::Equal,
        (Some(o), Cmp::Ne) => o != Ordering::Equal,
        (None, Cmp::Ne) => true,
        (Some(o), Cmp::Gt) => o == Ordering::Greater,
        (Some(o), Cmp::Ge) => o != Ordering::Less,
        (Some(o), Cmp::Lt) => o == Ordering::Less,
        (Some(o), Cmp::Le) => o != Ordering::Greater,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_options_and_rejects_unknown_dollar() {
        let q = parse("$select=Name,Status/Health&$top=2&$skip=1&foo=bar").unwrap();
        assert_eq!(q.select.unwrap()[1], vec!["Status", "Health"]);
        assert_eq!((q.top, q.skip), (Some(2), Some(1)));
        let e = parse("$bogus=1").unwrap_err();
        assert_eq!(e.status.as_u16(), 501);
        assert_eq!(parse("$top=x").unwrap_err().status.as_u16(), 400);
        assert_eq!(parse("only&$top=1").unwrap_err().messages[0].def.key, "QueryCombinationInvalid");
        assert_eq!(parse("$expand=*($levels=2)").unwrap().expand, Some(Expand { kind: ExpandKind::All, levels: 2 }));
        assert_eq!(parse("$expand=.").unwrap().expand, Some(Expand { kind: ExpandKind::NoLinks, levels: 1 }));
        assert!(parse("$expand=x").is_err());
        assert!(parse("$expand=*($levels=99)").is_err());
        assert_eq!(parse("%24top=3").unwrap().top, Some(3));
    }

    #[test]
    fn select_keeps_annotations_and_nested_paths() {
        let mut v = json!({"@odata.id": "/x", "Name": "n", "Status": {"Health": "OK", "State": "Enabled"}, "Other": 1});
        apply_select(&mut v, &parse("$select=Status/Health").unwrap().select.unwrap());
        assert_eq!(v, json!({"@odata.id": "/x", "Status": {"Health": "OK"}}));
    }

    #[test]
    fn filter_grammar_and_evaluation() {
        let v = json!({"Name": "a'b", "Enabled": true, "Count": 5, "Status": {"Health": "OK"}, "Tags": ["x", "y"]});
        let t = |s: &str| Filter::parse(s).unwrap().matches(&v);
        assert!(t("Name eq 'a''b'"));
        assert!(t("Enabled eq true and Count gt 4"));
        assert!(!t("Count lt 5"));
        assert!(t("Count le 5 and not (Status/Health eq 'Critical')"));
        assert!(t("Status/Health eq OK or Count eq 0"));
        assert!(t("Tags eq 'y'"));
        assert!(t("Missing eq null"));
        assert!(Filter::parse("Name eq").is_err());
        assert!(Filter::parse("Name eq 'x' junk").is_err());
        assert!(Filter::parse("(Name eq 'x'").is_err());
    }
}
