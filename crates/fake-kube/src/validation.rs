//! Validation where the real server is strict: object names, events.k8s.io Events, Leases,
//! decoding into the real type (wrong field types are 400), and unknown fields
//! (`fieldValidation=Strict` rejects them, the default `Warn` adds a `Warning` header).

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, Cause};
use crate::resources::ResourceType;

/// How unknown fields in a write are treated (the `fieldValidation` query parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Accept them and add a `Warning` header (the real server's default).
    #[default]
    Warn,
    /// Reject the write with 400 BadRequest.
    Strict,
}

impl FieldValidation {
    pub(crate) fn parse(s: Option<&str>) -> Result<FieldValidation, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// Whether `s` is a DNS-1123 label (≤ 63 characters, `[a-z0-9]([-a-z0-9]*[a-z0-9])?`).
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a DNS-1123 subdomain (≤ 253 characters, dot-separated labels).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// Checks `metadata.name`: namespaces need a DNS-1123 label, everything else a subdomain.
pub(crate) fn check_name(res: &ResourceType, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid(
            res,
            name,
            vec![Cause {
                reason: "FieldValueRequired".into(),
                field: "metadata.name".into(),
                message: "Required value: name or generateName is required".into(),
            }],
        ));
    }
    let (ok, msg) = if res.group.is_empty() && res.plural == "namespaces" {
        (is_dns1123_label(name), LABEL_MSG)
    } else {
        (is_dns1123_subdomain(name), SUBDOMAIN_MSG)
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            res,
            name,
            vec![Cause::invalid("metadata.name", &json!(name), msg)],
        ))
    }
}

const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

/// Whether `k` is a qualified name (`[prefix/]name`), as label and annotation keys must be.
pub fn is_qualified_name(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(|p| !p.is_empty() && is_dns1123_subdomain(p))
        && !name.is_empty()
        && is_label_value(name)
}

/// Label keys and values, annotation keys (422 with the real messages).
pub(crate) fn check_metadata(res: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut causes = Vec::new();
    for (field, values) in [("metadata.labels", true), ("metadata.annotations", false)] {
        let pointer = format!("/{}", field.replace('.', "/"));
        let Some(map) = obj.pointer(&pointer).and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in map {
            if !is_qualified_name(k) {
                causes.push(Cause::invalid(field, &json!(k), QUALIFIED_NAME_MSG));
            }
            if values {
                if let Some(s) = v.as_str() {
                    if !is_label_value(s) {
                        causes.push(Cause::invalid(field, &json!(s), LABEL_VALUE_MSG));
                    }
                }
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, name, causes))
    }
}

/// Whether `s` has the MicroTime wire format `2006-01-02T15:04:05.000000Z07:00`.
pub fn is_micro_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    if b.len() < 27 {
        return false;
    }
    let head = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26);
    let zone = &s[26..];
    let zone_ok = zone == "Z"
        || (zone.len() == 6
            && matches!(zone.as_bytes()[0], b'+' | b'-')
            && digits(27..29)
            && zone.as_bytes()[3] == b':'
            && digits(30..32));
    head && zone_ok
}

fn check_micro_time(res: &ResourceType, obj: &Value, pointer: &str) -> Result<(), ApiError> {
    match obj.pointer(pointer) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if is_micro_time(s) => Ok(()),
        Some(Value::String(s)) => Err(ApiError::cannot_handle(
            res,
            &format!("parsing time \"{s}\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse as MicroTime"),
        )),
        Some(other) => Err(ApiError::cannot_handle(
            res,
            &format!("json: cannot unmarshal {other} into Go value of type metav1.MicroTime"),
        )),
    }
}

fn non_empty_str(obj: &Value, pointer: &str) -> bool {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// Kind-specific validation (Events of events.k8s.io/v1, Leases).
pub(crate) fn check_kind_specific(res: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match (res.group.as_str(), res.plural.as_str()) {
        ("events.k8s.io", "events") => {
            check_micro_time(res, obj, "/eventTime")?;
            let mut causes = Vec::new();
            if obj.get("eventTime").is_none_or(Value::is_null) {
                causes.push(Cause::required("eventTime"));
            }
            for f in [
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
            ] {
                if !non_empty_str(obj, &format!("/{f}")) {
                    causes.push(Cause::required(f));
                }
            }
            for (f, max) in [("action", 128), ("reason", 128), ("reportingInstance", 128)] {
                if let Some(s) = obj.get(f).and_then(Value::as_str) {
                    if s.len() > max {
                        causes.push(Cause {
                            reason: "FieldValueTooLong".into(),
                            field: f.into(),
                            message: format!("Too long: may not be more than {max} bytes"),
                        });
                    }
                }
            }
            if obj.get("regarding").is_none_or(|r| !r.is_object()) {
                causes.push(Cause::required("regarding"));
            } else if let Some(rns) = obj.pointer("/regarding/namespace").and_then(Value::as_str) {
                let ns = obj
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !rns.is_empty() && rns != ns {
                    causes.push(Cause::invalid(
                        "regarding.namespace",
                        &json!(rns),
                        "does not match event.namespace",
                    ));
                }
            }
            match obj.get("type").and_then(Value::as_str) {
                Some("Normal") | Some("Warning") => {}
                other => causes.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    field: "type".into(),
                    message: format!(
                        "Invalid value: \"\": has invalid value: {}",
                        other.unwrap_or("")
                    ),
                }),
            }
            if let Some(series) = obj.get("series").filter(|s| s.is_object()) {
                check_micro_time(res, obj, "/series/lastObservedTime")?;
                let count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
                if count < 2 {
                    causes.push(Cause::invalid(
                        "series.count",
                        &json!(count),
                        "should be at least 2",
                    ));
                }
                if series.get("lastObservedTime").is_none_or(Value::is_null) {
                    causes.push(Cause::required("series.lastObservedTime"));
                }
            }
            if obj
                .get("note")
                .and_then(Value::as_str)
                .is_some_and(|n| n.len() > 1024)
            {
                causes.push(Cause {
                    reason: "FieldValueTooLong".into(),
                    field: "note".into(),
                    message: "Too long: may not be more than 1024 bytes".into(),
                });
            }
            if causes.is_empty() {
                Ok(())
            } else {
                Err(ApiError::invalid(res, name, causes))
            }
        }
        ("coordination.k8s.io", "leases") => {
            check_micro_time(res, obj, "/spec/acquireTime")?;
            check_micro_time(res, obj, "/spec/renewTime")?;
            let mut causes = Vec::new();
            if let Some(d) = obj
                .pointer("/spec/leaseDurationSeconds")
                .and_then(Value::as_i64)
            {
                if d <= 0 {
                    causes.push(Cause::invalid(
                        "spec.leaseDurationSeconds",
                        &json!(d),
                        "must be greater than 0",
                    ));
                }
            }
            if let Some(t) = obj
                .pointer("/spec/leaseTransitions")
                .and_then(Value::as_i64)
            {
                if t < 0 {
                    causes.push(Cause::invalid(
                        "spec.leaseTransitions",
                        &json!(t),
                        "must be greater than or equal to 0",
                    ));
                }
            }
            if causes.is_empty() {
                Ok(())
            } else {
                Err(ApiError::invalid(res, name, causes))
            }
        }
        ("", "events") => check_micro_time(res, obj, "/eventTime"),
        _ => Ok(()),
    }
}

fn rt<K: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let k: K = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(k).map_err(|e| e.to_string())
}

type RoundTrip = fn(&Value) -> Result<Value, String>;

fn round_trip_for(res: &ResourceType) -> Option<RoundTrip> {
    use k8s_openapi::api::{apps, coordination, core, events, storage};
    if !res.builtin {
        return None;
    }
    Some(match (res.group.as_str(), res.plural.as_str()) {
        ("", "namespaces") => rt::<core::v1::Namespace>,
        ("", "nodes") => rt::<core::v1::Node>,
        ("", "pods") => rt::<core::v1::Pod>,
        ("", "persistentvolumeclaims") => rt::<core::v1::PersistentVolumeClaim>,
        ("", "persistentvolumes") => rt::<core::v1::PersistentVolume>,
        ("", "events") => rt::<core::v1::Event>,
        ("", "configmaps") => rt::<core::v1::ConfigMap>,
        ("", "secrets") => rt::<core::v1::Secret>,
        ("", "serviceaccounts") => rt::<core::v1::ServiceAccount>,
        ("storage.k8s.io", "storageclasses") => rt::<storage::v1::StorageClass>,
        ("coordination.k8s.io", "leases") => rt::<coordination::v1::Lease>,
        ("events.k8s.io", "events") => rt::<events::v1::Event>,
        ("apps", "daemonsets") => rt::<apps::v1::DaemonSet>,
        _ => return None,
    })
}

fn unknown_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match o.get(k) {
                    None => out.push(p),
                    Some(ov) => unknown_fields(v, ov, &p, out),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, (iv, ov)) in i.iter().zip(o.iter()).enumerate() {
                unknown_fields(iv, ov, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Decodes the object as its real type: a field of the wrong type is 400 BadRequest; unknown
/// fields are handled per `fv`. Returns the warnings to send. Installed (custom) types are not
/// checked.
pub(crate) fn check_decode(
    res: &ResourceType,
    obj: &Value,
    fv: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let Some(round_trip) = round_trip_for(res) else {
        return Ok(Vec::new());
    };
    let out = round_trip(obj).map_err(|e| ApiError::cannot_handle(res, &e))?;
    if fv == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let mut unknown = Vec::new();
    unknown_fields(obj, &out, "", &mut unknown);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let msgs: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match fv {
        FieldValidation::Strict => Err(ApiError::cannot_handle(
            res,
            &format!("strict decoding error: {}", msgs.join(", ")),
        )),
        _ => Ok(msgs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_times() {
        assert!(is_dns1123_subdomain("pvc-a.b"));
        assert!(!is_dns1123_subdomain("Bad_Name"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(is_dns1123_label("app"));
        assert!(!is_dns1123_label("a.b"));
        assert!(is_micro_time("2026-01-02T15:04:05.123456Z"));
        assert!(is_micro_time("2026-01-02T15:04:05.123456+01:00"));
        assert!(!is_micro_time("2026-01-02T15:04:05Z"));
        assert!(!is_micro_time("2026-01-02T15:04:05.123Z"));
        assert!(is_qualified_name("holdfast.dev/schedule"));
        assert!(is_qualified_name("app"));
        assert!(!is_qualified_name("/app"));
        assert!(!is_qualified_name("Bad_Prefix/app"));
        assert!(is_label_value("") && is_label_value("v1.2_x"));
        assert!(!is_label_value("@daily") && !is_label_value("a b"));
    }

    #[test]
    fn unknown_fields_found() {
        let pods = crate::resources::default_resources()
            .into_iter()
            .find(|r| r.plural == "pods")
            .unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1}], "nope": true}});
        let w = check_decode(&pods, &pod, FieldValidation::Warn).unwrap();
        assert_eq!(
            w,
            vec![
                "unknown field \"spec.containers[0].bogus\"".to_string(),
                "unknown field \"spec.nope\"".to_string()
            ]
        );
        let e = check_decode(&pods, &pod, FieldValidation::Strict).unwrap_err();
        assert_eq!(e.code, 400);
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": 5}});
        assert_eq!(
            check_decode(&pods, &bad, FieldValidation::Warn)
                .unwrap_err()
                .code,
            400
        );
    }
}
