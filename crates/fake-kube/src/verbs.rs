//! The verbs (get, list, create, replace, patch, delete) with the real server's semantics.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::selectors::Selectors;
use crate::store::{
    meta_mut, name_of, namespace_of, new_uid, now_time, rv_of, ChangeType, StoreState,
};
use crate::validation::{self, FieldValidation};
use crate::Shared;

/// Decoded query parameters (last value wins).
pub(crate) type Query = HashMap<String, String>;

/// Options of a write request.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteOpts {
    pub fv: FieldValidation,
    pub field_manager: Option<String>,
    pub dry_run: bool,
}

impl WriteOpts {
    pub(crate) fn from_query(q: &Query) -> Result<WriteOpts, ApiError> {
        Ok(WriteOpts {
            fv: FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?,
            field_manager: q.get("fieldManager").filter(|s| !s.is_empty()).cloned(),
            dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        })
    }
}

/// The result of a write.
#[derive(Debug)]
pub(crate) struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    pub created: bool,
}

fn check_type_meta(res: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::cannot_handle(
            res,
            "the body is not a JSON object",
        ));
    }
    let av = res.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(av),
        Some(x) if x == av => {}
        Some(x) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({x}) does not match the expected API version ({av})"
            )))
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(res.kind),
        Some(x) if x == res.kind => {}
        Some(x) => {
            return Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {}): kind \"{x}\"",
                res.kind
            )))
        }
    }
    if obj
        .get("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Err(ApiError::cannot_handle(
            res,
            "json: cannot unmarshal metadata into Go struct field of type v1.ObjectMeta",
        ));
    }
    meta_mut(obj);
    Ok(())
}

fn set_namespace(res: &ResourceType, obj: &mut Value, url_ns: &str) -> Result<(), ApiError> {
    let meta = meta_mut(obj);
    if res.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(b) if !b.is_empty() && b != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {
                meta.insert("namespace".into(), json!(url_ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

/// GET one object.
pub(crate) fn get(
    sh: &Shared,
    res: &ResourceType,
    ns: &str,
    name: &str,
) -> Result<Value, ApiError> {
    sh.lock()
        .get(res, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, name))
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The objects of a list answer as the real server writes them: built-in types without
/// `kind`/`apiVersion` on each item.
fn list_item(res: &ResourceType, obj: &Value) -> Value {
    let mut o = obj.clone();
    if res.builtin {
        if let Some(m) = o.as_object_mut() {
            m.remove("kind");
            m.remove("apiVersion");
        }
    }
    o
}

/// LIST with selectors and `limit`/`continue` pagination. Later pages report the first page's
/// resourceVersion, as the real server does.
pub(crate) fn list(
    sh: &Shared,
    res: &ResourceType,
    ns: Option<&str>,
    q: &Query,
) -> Result<Value, ApiError> {
    let sel = Selectors::from_query(q, res)?;
    let limit: usize = match q.get("limit") {
        None => 0,
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("limit: Invalid value: \"{l}\"")))?,
    };
    let st = sh.lock();
    let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        None => (st.rv, None),
        Some(tok) => {
            let bad = || {
                ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
            };
            let raw = hex_decode(tok).ok_or_else(bad)?;
            let (rv, cns, cname): (u64, String, String) =
                serde_json::from_slice(&raw).map_err(|_| bad())?;
            if rv < st.compacted {
                return Err(ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."));
            }
            (rv, Some((cns, cname)))
        }
    };
    let mut items: Vec<&Value> = st
        .list(res, ns)
        .into_iter()
        .filter(|o| {
            after
                .as_ref()
                .is_none_or(|a| (namespace_of(o), name_of(o)) > (a.0.clone(), a.1.clone()))
        })
        .filter(|o| sel.matches(o))
        .collect();
    let mut meta = json!({ "resourceVersion": list_rv.to_string() });
    if limit > 0 && items.len() > limit {
        let remaining = items.len() - limit;
        items.truncate(limit);
        let last = items[limit - 1];
        let tok = serde_json::to_vec(&(list_rv, namespace_of(last), name_of(last)))
            .expect("token serializes");
        meta["continue"] = json!(hex_encode(&tok));
        meta["remainingItemCount"] = json!(remaining);
    }
    Ok(json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": meta,
        "items": items.into_iter().map(|o| list_item(res, o)).collect::<Vec<_>>(),
    }))
}

const GENERATE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_name(prefix: &str) -> String {
    let suffix: String = (0..5)
        .map(|_| GENERATE_ALPHABET[rand::random::<usize>() % GENERATE_ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// What the real server resets on create, per type.
fn defaults_on_create(res: &ResourceType, obj: &mut Value) {
    if !res.builtin {
        // A custom resource with a status subresource ignores the status sent on create.
        if res.has_status {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        return;
    }
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "pods") | ("", "persistentvolumeclaims") | ("", "persistentvolumes") => {
            obj["status"] = json!({ "phase": "Pending" });
        }
        ("", "namespaces") => {
            let name = name_of(obj);
            obj["status"] = json!({ "phase": "Active" });
            obj["spec"] = json!({ "finalizers": ["kubernetes"] });
            let meta = meta_mut(obj);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        ("apps", "daemonsets") => {
            obj["status"] = json!({
                "currentNumberScheduled": 0, "desiredNumberScheduled": 0,
                "numberMisscheduled": 0, "numberReady": 0
            });
        }
        _ => {}
    }
}

/// Sets what the server owns on a new object (uid, creationTimestamp, generation), clearing
/// what a client may not set (resourceVersion, deletion fields).
pub(crate) fn server_fields_on_create(obj: &mut Value) {
    let meta = meta_mut(obj);
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now_time()));
    meta.insert("generation".into(), json!(1));
}

/// CREATE in namespace `url_ns` (None for cluster-scoped types).
pub(crate) fn create_locked(
    st: &mut StoreState,
    res: &ResourceType,
    url_ns: Option<&str>,
    mut body: Value,
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    check_type_meta(res, &mut body)?;
    let ns = url_ns.unwrap_or("").to_string();
    if res.namespaced && ns.is_empty() {
        return Err(ApiError::method_not_allowed());
    }
    set_namespace(res, &mut body, &ns)?;
    let meta = meta_mut(&mut body);
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        if let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
            if !prefix.is_empty() {
                name = generated_name(prefix);
                meta.insert("name".into(), json!(name));
            }
        }
    }
    validation::check_name(res, &name)?;
    if res.namespaced && !st.namespace_exists(&ns) {
        return Err(ApiError::namespace_not_found(&ns));
    }
    if st.get(res, &ns, &name).is_some() {
        return Err(ApiError::already_exists(res, &name));
    }
    server_fields_on_create(&mut body);
    defaults_on_create(res, &mut body);
    validation::check_metadata(res, &body)?;
    validation::check_kind_specific(res, &body)?;
    let warnings = validation::check_decode(res, &body, opts.fv)?;
    let object = if opts.dry_run {
        body
    } else {
        st.put(res, body, ChangeType::Added)
    };
    Ok(Written {
        object,
        warnings,
        created: true,
    })
}

/// CREATE (POST to the collection).
pub(crate) fn create(
    sh: &Shared,
    res: &ResourceType,
    ns: Option<&str>,
    body: Value,
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    create_locked(&mut sh.lock(), res, ns, body, opts)
}

fn without_meta_and_status(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("kind");
        m.remove("apiVersion");
    }
    o
}

/// UPDATE `name` to `new` (PUT, and the end of every PATCH). `sub` is `Some("status")` for the
/// status subresource.
pub(crate) fn update_locked(
    st: &mut StoreState,
    res: &ResourceType,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    mut new: Value,
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    check_type_meta(res, &mut new)?;
    let existing = st
        .get(res, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let body_name = name_of(&new);
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    set_namespace(res, &mut new, ns)?;
    let rv = rv_of(&new);
    if !rv.is_empty() && rv != rv_of(&existing) {
        return Err(ApiError::stale(res, name));
    }
    let old_uid = existing
        .pointer("/metadata/uid")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(uid) = new.pointer("/metadata/uid").and_then(Value::as_str) {
        if !uid.is_empty() && Some(uid) != old_uid.as_str() {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old_uid.as_str().unwrap_or("")
                ),
            ));
        }
    }
    if sub == Some("status") {
        let mut merged = existing.clone();
        merged["status"] = new.get("status").cloned().unwrap_or(json!({}));
        new = merged;
    } else if res.has_status {
        match existing.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    let spec_changed = without_meta_and_status(&new) != without_meta_and_status(&existing);
    {
        let old_meta = existing["metadata"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let meta = meta_mut(&mut new);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match old_meta.get(k) {
                Some(v) => meta.insert(k.into(), v.clone()),
                None => meta.remove(k),
            };
        }
        match old_meta.get("generation").and_then(Value::as_i64) {
            Some(g) => {
                meta.insert("generation".into(), json!(g + i64::from(spec_changed)));
            }
            None => {
                meta.remove("generation");
            }
        }
        meta.insert("resourceVersion".into(), json!(rv_of(&existing)));
    }
    validation::check_metadata(res, &new)?;
    validation::check_kind_specific(res, &new)?;
    let warnings = validation::check_decode(res, &new, opts.fv)?;
    if new == existing || opts.dry_run {
        // The real server skips a write that changes nothing: no new resourceVersion, no event.
        return Ok(Written {
            object: new,
            warnings,
            created: false,
        });
    }
    let being_deleted = new.pointer("/metadata/deletionTimestamp").is_some();
    let no_finalizers = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    let stored = st.put(res, new, ChangeType::Modified);
    if being_deleted && no_finalizers {
        let gone = st.remove(res, ns, name).unwrap_or(stored);
        return Ok(Written {
            object: gone,
            warnings,
            created: false,
        });
    }
    Ok(Written {
        object: stored,
        warnings,
        created: false,
    })
}

/// REPLACE (PUT). Without `metadata.resourceVersion` it is an unconditional update.
pub(crate) fn replace(
    sh: &Shared,
    res: &ResourceType,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    body: Value,
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    update_locked(&mut sh.lock(), res, ns, name, sub, body, opts)
}

/// PATCH with one of the four patch types.
///
/// `application/strategic-merge-patch+json` is applied as a JSON merge patch (RFC 7386): lists
/// are replaced whole, not merged by their merge key as the real server would.
/// `application/apply-patch+yaml` (server-side apply) creates the object when absent and
/// otherwise merges the applied configuration like a merge patch; it does not track field
/// managers, so it never answers an apply conflict.
#[allow(clippy::too_many_arguments)]
pub(crate) fn patch(
    sh: &Shared,
    res: &ResourceType,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    content_type: &str,
    body: &[u8],
    opts: &WriteOpts,
) -> Result<Written, ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let mut st = sh.lock();
    match ct {
        "application/apply-patch+yaml" => {
            if opts.field_manager.is_none() {
                let mut e = ApiError::new(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                );
                e.details = Some(json!({
                    "group": "meta.k8s.io", "kind": "PatchOptions",
                    "causes": [{"reason": "FieldValueRequired",
                        "message": "Required value: is required for apply patch",
                        "field": "fieldManager"}]
                }));
                return Err(e);
            }
            let applied: Value = serde_yaml_ng::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            let mut applied = applied;
            check_type_meta(res, &mut applied)?;
            let body_name = name_of(&applied);
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            match st.get(res, ns, name).cloned() {
                None if sub.is_some() => Err(ApiError::not_found(res, name)),
                None => {
                    let url_ns = res.namespaced.then_some(ns);
                    create_locked(&mut st, res, url_ns, applied, opts)
                }
                Some(existing) => {
                    let mut merged = existing;
                    let mut applied = applied;
                    if rv_of(&applied).is_empty() {
                        if let Some(m) = applied.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                            m.remove("resourceVersion");
                        }
                    }
                    json_patch::merge(&mut merged, &applied);
                    update_locked(&mut st, res, ns, name, sub, merged, opts)
                }
            }
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if !p.is_object() {
                return Err(ApiError::bad_request("error decoding patch: not a JSON object"));
            }
            let mut doc = st
                .get(res, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(res, name))?;
            json_patch::merge(&mut doc, &p);
            update_locked(&mut st, res, ns, name, sub, doc, opts)
        }
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = st
                .get(res, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(res, name))?;
            json_patch::patch(&mut doc, &p)
                .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
            update_locked(&mut st, res, ns, name, sub, doc, opts)
        }
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format ({other}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"),
        )),
    }
}

fn success_status(res: &ResourceType, obj: &Value) -> Value {
    let mut d = json!({
        "name": name_of(obj),
        "kind": res.plural,
        "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
    });
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d})
}

/// DELETE. Objects with finalizers get a deletionTimestamp and stay (MODIFIED) until an update
/// removes the last finalizer. Pods go at once (no kubelet here) and the answer is the pod with
/// its deletionTimestamp; a namespace takes its contents with it; other built-in types answer a
/// `Success` Status as the real server does; installed types answer the deleted object.
pub(crate) fn delete(
    sh: &Shared,
    res: &ResourceType,
    ns: &str,
    name: &str,
    body: &[u8],
    dry_run: bool,
) -> Result<Value, ApiError> {
    let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let dry_run = dry_run
        || opts
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|d| d == "All"));
    let mut st = sh.lock();
    let existing = st
        .get(res, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, name))?;
    if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
        let have = existing
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        if uid != have {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            ));
        }
    }
    if let Some(rv) = opts
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        let have = rv_of(&existing);
        if rv != have {
            return Err(ApiError::conflict(res, name, &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
            )));
        }
    }
    if dry_run {
        return Ok(existing);
    }
    let has_finalizers = existing
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let is_namespace = res.builtin && res.group.is_empty() && res.plural == "namespaces";
    if has_finalizers && !is_namespace {
        if existing.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(existing);
        }
        let mut marked = existing;
        let meta = meta_mut(&mut marked);
        meta.insert("deletionTimestamp".into(), json!(now_time()));
        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        return Ok(st.put(res, marked, ChangeType::Modified));
    }
    if is_namespace {
        for (key, obj_name) in st.keys_in_namespace(name) {
            st.remove_key(&key, name, &obj_name);
        }
        let mut gone = st.remove(res, ns, name).unwrap_or(existing);
        meta_mut(&mut gone).insert("deletionTimestamp".into(), json!(now_time()));
        gone["status"] = json!({ "phase": "Terminating" });
        return Ok(gone);
    }
    let mut gone = st.remove(res, ns, name).unwrap_or(existing);
    if res.builtin && res.group.is_empty() && res.plural == "pods" {
        let grace = opts
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        let meta = meta_mut(&mut gone);
        meta.insert("deletionTimestamp".into(), json!(now_time()));
        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        return Ok(gone);
    }
    if res.builtin {
        return Ok(success_status(res, &gone));
    }
    Ok(gone)
}

/// DELETE on a collection (deletecollection): removes every matching object, answers the list
/// of what it removed.
pub(crate) fn delete_collection(
    sh: &Shared,
    res: &ResourceType,
    ns: Option<&str>,
    q: &Query,
) -> Result<Value, ApiError> {
    let sel = Selectors::from_query(q, res)?;
    let mut st = sh.lock();
    let victims: Vec<(String, String)> = st
        .list(res, ns)
        .into_iter()
        .filter(|o| sel.matches(o))
        .map(|o| (namespace_of(o), name_of(o)))
        .collect();
    let mut items = Vec::new();
    for (n, name) in victims {
        if let Some(o) = st.remove(res, &n, &name) {
            items.push(list_item(res, &o));
        }
    }
    Ok(json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": { "resourceVersion": st.rv.to_string() },
        "items": items,
    }))
}
