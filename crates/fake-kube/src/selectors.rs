//! Label selectors (equality- and set-based) and field selectors (only the fields the real
//! server supports for each kind; anything else is 400 `field label not supported`).

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::ResourceType;

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed `labelSelector`: every requirement must hold (comma = AND).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<(String, LabelOp)>);

fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn parse_err(term: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: found '{term}', expected: valid label selector requirement"
    ))
}

impl LabelSelector {
    /// Parses a selector such as `app=web,tier in (a,b),!legacy`.
    pub fn parse(s: &str) -> Result<LabelSelector, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for raw in split_top_level(s) {
            let term = raw.trim();
            if term.is_empty() {
                return Err(parse_err(term));
            }
            if let Some(key) = term.strip_prefix('!') {
                let key = key.trim();
                if !valid_key(key) {
                    return Err(parse_err(term));
                }
                reqs.push((key.to_string(), LabelOp::NotExists));
            } else if let Some(open) = term.find('(') {
                if !term.ends_with(')') {
                    return Err(parse_err(term));
                }
                let head: Vec<&str> = term[..open].split_whitespace().collect();
                let values: Vec<String> = term[open + 1..term.len() - 1]
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .collect();
                if head.len() != 2 || !valid_key(head[0]) || values.iter().any(|v| !valid_value(v))
                {
                    return Err(parse_err(term));
                }
                let op = match head[1] {
                    "in" => LabelOp::In(values),
                    "notin" => LabelOp::NotIn(values),
                    _ => return Err(parse_err(term)),
                };
                reqs.push((head[0].to_string(), op));
            } else if let Some((k, v)) = term.split_once("!=") {
                reqs.push(Self::kv(term, k, v, false)?);
            } else if let Some((k, v)) = term.split_once("==") {
                reqs.push(Self::kv(term, k, v, true)?);
            } else if let Some((k, v)) = term.split_once('=') {
                reqs.push(Self::kv(term, k, v, true)?);
            } else if valid_key(term) {
                reqs.push((term.to_string(), LabelOp::Exists));
            } else {
                return Err(parse_err(term));
            }
        }
        Ok(LabelSelector(reqs))
    }

    fn kv(term: &str, k: &str, v: &str, eq: bool) -> Result<(String, LabelOp), ApiError> {
        let (k, v) = (k.trim(), v.trim());
        if !valid_key(k) || !valid_value(v) {
            return Err(parse_err(term));
        }
        let op = if eq {
            LabelOp::Eq(v.into())
        } else {
            LabelOp::NotEq(v.into())
        };
        Ok((k.to_string(), op))
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|(k, op)| match op {
            LabelOp::Eq(v) => get(k) == Some(v.as_str()),
            LabelOp::NotEq(v) => get(k) != Some(v.as_str()),
            LabelOp::In(vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelOp::NotIn(vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            LabelOp::Exists => get(k).is_some(),
            LabelOp::NotExists => get(k).is_none(),
        })
    }
}

/// A parsed `fieldSelector`: `field=value`, `field==value`, `field!=value`, comma = AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields the real server supports in field selectors for a resource type.
pub fn supported_fields(res: &ResourceType) -> Vec<&'static str> {
    let mut f = vec!["metadata.name", "metadata.namespace"];
    let extra: &[&str] = match (res.group.as_str(), res.plural.as_str()) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "events") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "persistentvolumeclaims") => &[],
        _ => &[],
    };
    f.extend_from_slice(extra);
    f
}

fn field_value(obj: &Value, field: &str) -> String {
    // Core events expose `source` as `source.component`.
    let field = if field == "source" {
        "source.component"
    } else {
        field
    };
    let pointer = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Null) | None => {
            if matches!(field, "spec.hostNetwork" | "spec.unschedulable") {
                "false".into()
            } else {
                String::new()
            }
        }
        Some(other) => other.to_string(),
    }
}

impl FieldSelector {
    /// Parses a field selector for `res`; unsupported fields are 400 BadRequest.
    pub fn parse(s: &str, res: &ResourceType) -> Result<FieldSelector, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        let supported = supported_fields(res);
        for term in s.split(',') {
            let term = term.trim();
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let k = k.trim();
            if !supported.contains(&k) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {k}"
                )));
            }
            reqs.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the object satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(k, eq, v)| (field_value(obj, k) == *v) == *eq)
    }
}

/// A label and a field selector together.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub(crate) fn parse(
        labels: Option<&str>,
        fields: Option<&str>,
        res: &ResourceType,
    ) -> Result<Selectors, ApiError> {
        Ok(Selectors {
            labels: LabelSelector::parse(labels.unwrap_or(""))?,
            fields: FieldSelector::parse(fields.unwrap_or(""), res)?,
        })
    }

    /// The selectors of a request's `labelSelector` and `fieldSelector` query parameters.
    pub(crate) fn from_query(
        q: &std::collections::HashMap<String, String>,
        res: &ResourceType,
    ) -> Result<Selectors, ApiError> {
        Self::parse(
            q.get("labelSelector").map(String::as_str),
            q.get("fieldSelector").map(String::as_str),
            res,
        )
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn set_based_and_equality() {
        let o = obj(json!({"app": "web", "tier": "db"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(!m("app!=web"));
        assert!(m("tier in (db, cache)"));
        assert!(!m("tier notin (db)"));
        assert!(m("missing notin (x),!missing"));
        assert!(!m("!app"));
        assert!(m("app in (web),tier in (x,db)"));
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn field_selector_strict() {
        let pods = crate::resources::default_resources()
            .into_iter()
            .find(|r| r.plural == "pods")
            .unwrap();
        let o = obj(json!({}));
        assert!(FieldSelector::parse("spec.nodeName=n1", &pods)
            .unwrap()
            .matches(&o));
        assert!(!FieldSelector::parse("spec.nodeName!=n1", &pods)
            .unwrap()
            .matches(&o));
        let e = FieldSelector::parse("spec.bogus=1", &pods).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(e.message, "field label not supported: spec.bogus");
    }
}
