//! The HTML pages: start page (health, groups, newest snapshots), a group's snapshots, the
//! file browser, diffs, drills and coverage.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use holdfast_engine::diff::{Change, ChangeKind, DiffCounts};
use holdfast_repo::backend::FileKind;
use holdfast_repo::snapshot::Snapshot;
use holdfast_repo::tree::{Node, NodeKind};
use holdfast_repo::Id;
use maud::{html, Markup};

use crate::auth::Caller;
use crate::layout::{self, age, age_of, can_restore, freshness, size};
use crate::paths::{self, encode, show, Params};
use crate::{App, PAGE_SIZE};

/// A page saying what went wrong, with `status`.
pub(crate) fn error_page(app: &App, caller: &Caller, status: StatusCode, msg: &str) -> Response {
    let body =
        html! { p.error #error { (msg) } p { a href=(app.link("/")) { "Back to the snapshots" } } };
    (status, layout::page(app, caller, "Error", body)).into_response()
}

/// The first and last-plus-one index of page `page` (1-based; out of range is clamped) of
/// `total` entries, `per` a page, and the number of pages (at least 1).
pub(crate) fn page_bounds(total: usize, page: usize, per: usize) -> (usize, usize, usize, usize) {
    let pages = total.div_ceil(per).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * per;
    (start, (start + per).min(total), page, pages)
}

/// The value of tag `key=` of a snapshot.
pub(crate) fn tag<'a>(s: &'a Snapshot, key: &str) -> Option<&'a str> {
    s.tags
        .iter()
        .find_map(|t| t.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Which series a snapshot belongs to, for grouping: a PVC (`namespace/pvc`), a job
/// (`kind=...` with its name) or, for plain backups, its paths. Returns (job kind, label).
pub(crate) fn group_of(s: &Snapshot) -> (String, String) {
    let kind = tag(s, "kind").unwrap_or("");
    let ns = tag(s, "namespace");
    if let (Some(ns), Some(pvc)) = (ns, tag(s, "pvc")) {
        return ("volume".into(), format!("{ns}/{pvc}"));
    }
    let paths = s
        .paths
        .iter()
        .map(|p| show(p))
        .collect::<Vec<_>>()
        .join(" ");
    match kind {
        "" => ("paths".into(), paths),
        "dump" => (
            "dump".into(),
            format!("{}/{}", ns.unwrap_or("?"), tag(s, "owner").unwrap_or("?")),
        ),
        "drill" => ("drill".into(), tag(s, "drill").unwrap_or("?").to_string()),
        "bucket" => (
            "bucket".into(),
            tag(s, "bucket").unwrap_or(&paths).to_string(),
        ),
        k => (k.to_string(), paths),
    }
}

fn tags(s: &Snapshot) -> Markup {
    html! { @for t in &s.tags { span.tag { (t) } } }
}

fn snap_link(app: &App, id: &Id) -> String {
    app.link(&format!("/s/{}", id.to_hex()))
}

/// A link into the browser of snapshot `id` at `path`.
pub(crate) fn browse_link(app: &App, id: &Id, path: &[u8]) -> String {
    if path.is_empty() {
        snap_link(app, id)
    } else {
        format!("{}?p={}", snap_link(app, id), encode(path))
    }
}

fn fresh_cell(secs: u64) -> Markup {
    let class = freshness(secs);
    html! { span class={"fresh " (class)} { span class={"dot " (class)} {} (age(secs)) " ago" } }
}

/// `GET /`: repository health, snapshots grouped with their freshness, newest snapshots.
pub(crate) async fn index(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let loaded = match app.catalog.get(false).await {
        Ok(l) => l,
        Err(e) => return error_page(&app, &caller, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let repo = app.catalog.repo().clone();
    let packs = tokio::task::spawn_blocking(move || repo.backend().list(FileKind::Pack))
        .await
        .ok()
        .and_then(Result::ok);
    let snaps = &loaded.snapshots;
    // Growth: stored bytes the snapshots of each of the last 14 days added.
    let now = chrono::Utc::now().timestamp();
    let mut days = [0u64; 14];
    for (_, s) in snaps {
        let d = (now - s.time_ns.div_euclid(1_000_000_000)) / 86400;
        if (0..14).contains(&d) {
            days[d as usize] += s.summary.bytes_added_stored;
        }
    }
    let growth: u64 = days.iter().sum();
    let max_day = days.iter().copied().max().unwrap_or(0).max(1);
    // Groups: newest snapshot, count, per (host, kind, label).
    let mut groups: BTreeMap<(String, String, String), (usize, &Id, &Snapshot)> = BTreeMap::new();
    for (id, s) in snaps {
        let (kind, label) = group_of(s);
        let e = groups
            .entry((s.host.clone(), kind, label))
            .or_insert((0, id, s));
        e.0 += 1;
        if s.time_ns >= e.2.time_ns {
            e.1 = id;
            e.2 = s;
        }
    }
    let last_check = app.state.cluster.as_ref().and_then(|c| c.last_check());
    let activity = app
        .state
        .cluster
        .as_ref()
        .map(|c| c.activity())
        .unwrap_or_default();
    let body = html! {
        div.cards #health {
            div.card { div.v #snapshot-count { (snaps.len()) } div.k { "snapshots" } }
            div.card { div.v { @match &packs { Some(p) => (size(p.iter().map(|(_, s)| s).sum())), None => "?" } }
                div.k { "repository size (" (packs.as_ref().map_or(0, Vec::len)) " packs)" } }
            div.card { div.v { (size(growth / 14)) "/day" } div.k { "growth, last 14 days (" (size(growth)) ")" } }
            div.card { div.v { (groups.len()) } div.k { "series (host · PVC / job)" } }
            div.card { div.v { @match &last_check { Some(c) => (c), None => "unknown" } }
                div.k { "last check" @if last_check.is_none() { " (run holdfast check, or see the agent)" } } }
        }
        @if !loaded.unreadable.is_empty() {
            div.panel.error { (loaded.unreadable.len()) " snapshot files cannot be read: "
                @for u in &loaded.unreadable { br; (u) } }
        }
        h2 { "By cluster, namespace, PVC and job" }
        table #groups {
            thead { tr { th { "host / cluster" } th { "job" } th { "series" } th { "newest" } th { "freshness" } th.num { "snapshots" } th.num { "size" } } }
            tbody {
                @for ((host, kind, label), (count, id, s)) in &groups {
                    tr {
                        td { (host) } td { (kind) }
                        td { a href=(format!("{}?host={}&kind={}&label={}", app.link("/group"), encode(host.as_bytes()), encode(kind.as_bytes()), encode(label.as_bytes()))) { (label) } }
                        td { a.mono href=(snap_link(&app, id)) { (id.short()) } " " span.muted { (layout::time(s.time_ns)) } }
                        td { (fresh_cell(age_of(s.time_ns))) }
                        td.num { (count) } td.num { (size(s.summary.bytes_total)) }
                    }
                }
            }
        }
        @if !activity.is_empty() {
            h2 { "Agent activity" }
            table #activity { thead { tr { th { "what" } th { "started" } th { "state" } th { "detail" } } }
                tbody { @for a in &activity { tr { td { (a.what) } td { (a.started) } td { (a.state) } td { (a.detail) } } } } }
        }
        h2 { "Newest snapshots" }
        (snapshot_table(&app, snaps.iter().rev().take(50)))
        h2 { "Growth" }
        table.growth { thead { tr { th { "day" } th.num { "added (stored)" } th { "" } } }
            tbody { @for (d, b) in days.iter().enumerate() {
                tr { td { (chrono::DateTime::from_timestamp(now - d as i64 * 86400, 0).map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()) }
                     td.num { (size(*b)) }
                     td.bar-cell { div style=(format!("width:{}%", b * 100 / max_day)) {} } } } } }
    };
    layout::page(&app, &caller, "Snapshots", body).into_response()
}

fn snapshot_table<'a>(app: &App, rows: impl Iterator<Item = &'a (Id, Snapshot)>) -> Markup {
    html! {
        table.snapshots {
            thead { tr { th { "ID" } th { "time (UTC)" } th { "host" } th { "paths" } th { "tags" } th.num { "size" } th.num { "added" } } }
            tbody {
                @for (id, s) in rows {
                    tr {
                        td { a.mono.snap href=(snap_link(app, id)) { (id.short()) } }
                        td { (layout::time(s.time_ns)) }
                        td { (s.host) }
                        td.mono { @for p in &s.paths { (show(p)) br; } }
                        td { (tags(s)) }
                        td.num { (size(s.summary.bytes_total)) }
                        td.num { (size(s.summary.bytes_added_stored)) }
                    }
                }
            }
        }
    }
}

/// `GET /group?host=&kind=&label=`: the snapshots of one series, newest first, each with a
/// link to its diff against the one before.
pub(crate) async fn group(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = Params::parse(q.as_deref().unwrap_or(""));
    let (host, kind, label) = (
        q.text("host").unwrap_or(""),
        q.text("kind").unwrap_or(""),
        q.text("label").unwrap_or(""),
    );
    let loaded = match app.catalog.get(false).await {
        Ok(l) => l,
        Err(e) => return error_page(&app, &caller, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let members: Vec<&(Id, Snapshot)> = loaded
        .snapshots
        .iter()
        .filter(|(_, s)| s.host == host && group_of(s) == (kind.to_string(), label.to_string()))
        .collect();
    let body = html! {
        p { "Host " b { (host) } ", " (kind) " " b { (label) } ": " (members.len()) " snapshots, newest first." }
        table.snapshots {
            thead { tr { th { "ID" } th { "time (UTC)" } th { "age" } th { "tags" } th.num { "size" } th.num { "added" } th { "" } } }
            tbody {
                @for (i, (id, s)) in members.iter().enumerate().rev() {
                    tr {
                        td { a.mono.snap href=(snap_link(&app, id)) { (id.short()) } }
                        td { (layout::time(s.time_ns)) }
                        td { (age(age_of(s.time_ns))) }
                        td { (tags(s)) }
                        td.num { (size(s.summary.bytes_total)) }
                        td.num { (size(s.summary.bytes_added_stored)) }
                        td { @if i > 0 { a.diff href=(format!("{}?a={}&b={}", app.link("/diff"), members[i - 1].0.to_hex(), id.to_hex())) { "diff with previous" } } }
                    }
                }
            }
        }
    };
    layout::page(&app, &caller, &format!("Series {label}"), body).into_response()
}

/// Breadcrumbs: the snapshot, then each component of `path`, each a link.
fn crumbs(app: &App, id: &Id, path: &[u8]) -> Markup {
    let comps: Vec<&[u8]> = paths::components(path).collect();
    html! {
        nav.crumbs #crumbs {
            a href=(browse_link(app, id, b"")) { "snapshot " (id.short()) }
            @for i in 0..comps.len() {
                " / "
                @let sub = [b"/".as_slice(), &comps[..=i].join(&b'/')].concat();
                a href=(browse_link(app, id, &sub)) { (show(comps[i])) }
            }
        }
    }
}

fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::CharDevice => "char device",
        NodeKind::BlockDevice => "block device",
        NodeKind::Socket => "socket",
    }
}

/// The restore form for `path` in snapshot `id` (callers with role restore only).
pub(crate) fn restore_form(app: &App, caller: &Caller, id: &Id, path: &[u8]) -> Markup {
    if !can_restore(caller) {
        return html! { p.muted { "Restoring needs the restore role." } };
    }
    let what = if path.is_empty() {
        "the whole snapshot".to_string()
    } else {
        show(path)
    };
    html! {
        div.panel #restore {
            form method="post" action=(app.link("/restore")) {
                (layout::csrf(caller))
                input type="hidden" name="snapshot" value=(id.to_hex());
                input type="hidden" name="path_enc" value=(encode(path));
                b { "Restore " span.mono { (what) } " to a directory on the server: " }
                input #target type="text" name="target" placeholder="/absolute/target/directory" required;
                " "
                label { input #overwrite type="checkbox" name="overwrite" value="1"; " overwrite a non-empty target" }
                " "
                button #restore-button type="submit" { "Restore" }
                p.muted { "The target must not exist or must be empty unless overwrite is ticked. "
                    @if path.is_empty() { "The snapshot's paths are recreated under it." }
                    @else { "The entry is recreated under it by its name." } }
            }
            @if app.state.cluster.is_some() {
                form method="post" action=(app.link("/restore")) {
                    (layout::csrf(caller))
                    input type="hidden" name="snapshot" value=(id.to_hex());
                    input type="hidden" name="path_enc" value=(encode(path));
                    b { "Or into a PVC: " }
                    input type="text" name="namespace" placeholder="namespace" required;
                    " " input type="text" name="pvc" placeholder="pvc" required;
                    " " button type="submit" { "Restore into PVC" }
                }
            }
        }
    }
}

/// `GET /s/ID?p=PATH&page=N`: a directory listing (paged) or an entry's details.
pub(crate) async fn browse(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(hex): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = Params::parse(q.as_deref().unwrap_or(""));
    let path = q.snapshot_path();
    let page: usize = q.text("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let (loaded, id, snap) = match app.catalog.snapshot(&hex).await {
        Ok(x) => x,
        Err(e) => return error_page(&app, &caller, StatusCode::NOT_FOUND, &e),
    };
    let app2 = app.clone();
    let root = snap.tree;
    let p2 = path.clone();
    // The entry and, for a directory, its tree: from the cache or decoded once.
    let found = tokio::task::spawn_blocking(move || {
        let node = app2.catalog.lookup(&loaded.index, &root, &p2)?;
        let tree = match node.as_ref().map(|n| n.subtree) {
            None => Some(app2.catalog.tree(&loaded.index, &root)?),
            Some(Some(sub)) => Some(app2.catalog.tree(&loaded.index, &sub)?),
            Some(None) => None,
        };
        Ok::<_, String>((node, tree))
    })
    .await;
    let (node, tree) = match found {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return error_page(&app, &caller, StatusCode::NOT_FOUND, &e),
        Err(e) => {
            return error_page(
                &app,
                &caller,
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            )
        }
    };
    let title = if path.is_empty() {
        format!("Snapshot {}", id.short())
    } else {
        show(paths::components(&path).last().unwrap_or(b""))
    };
    let info = html! {
        p.muted #snapinfo { "Snapshot " span.mono { (id.short()) } " of " (snap.host) " at " (layout::time(snap.time_ns)) " UTC · "
            @for p in &snap.paths { span.mono { (show(p)) } " " } (tags(&snap)) }
        (crumbs(&app, &id, &path))
    };
    let body = match (node, tree) {
        (node, Some(tree)) => {
            let (start, end, page, pages) = page_bounds(tree.nodes.len(), page, PAGE_SIZE);
            let tar_name = match &node {
                Some(n) => show(&n.name),
                None => format!("snapshot-{}", id.short()),
            };
            let pager = pager(&app, &id, &path, page, pages, tree.nodes.len(), start, end);
            html! {
                (info)
                p {
                    a.button #download-tar href=(format!("{}/tar?p={}", snap_link(&app, &id), encode(&path))) { "Download " (tar_name) ".tar" }
                }
                (pager)
                table #listing {
                    thead { tr { th { "name" } th { "kind" } th.num { "size" } th { "mode" } th { "modified (UTC)" } } }
                    tbody {
                        @for n in &tree.nodes[start..end] {
                            @let child = [path.as_slice(), b"/", &n.name].concat();
                            tr {
                                td { a.entry href=(browse_link(&app, &id, &child)) { (show(&n.name)) @if n.kind == NodeKind::Dir { "/" } } }
                                td { (kind_name(n.kind)) }
                                td.num { @if n.kind == NodeKind::File { (size(n.size)) } }
                                td.mono { (format!("{:04o}", n.mode & 0o7777)) }
                                td { (layout::time(n.mtime_ns)) }
                            }
                        }
                    }
                }
                (pager)
                (restore_form(&app, &caller, &id, &path))
            }
        }
        (Some(n), None) => entry_details(&app, &caller, &id, &path, &n, info),
        (None, None) => unreachable!("the root always has a tree"),
    };
    layout::page(&app, &caller, &title, body).into_response()
}

#[allow(clippy::too_many_arguments)]
fn pager(
    app: &App,
    id: &Id,
    path: &[u8],
    page: usize,
    pages: usize,
    total: usize,
    start: usize,
    end: usize,
) -> Markup {
    let link = |p: usize| {
        format!(
            "{}{}page={p}",
            browse_link(app, id, path),
            if path.is_empty() { "?" } else { "&" }
        )
    };
    html! {
        div.pager {
            span.muted { "entries " (if total == 0 { 0 } else { start + 1 }) "–" (end) " of " (total) }
            @if pages > 1 {
                @if page > 1 { a.prev href=(link(1)) { "« first" } a.prev href=(link(page - 1)) { "‹ previous" } }
                span { "page " (page) " of " (pages) }
                @if page < pages { a.next href=(link(page + 1)) { "next ›" } a.next href=(link(pages)) { "last »" } }
            }
        }
    }
}

fn entry_details(
    app: &App,
    caller: &Caller,
    id: &Id,
    path: &[u8],
    n: &Node,
    info: Markup,
) -> Markup {
    html! {
        (info)
        table #details {
            tr { th { "kind" } td { (kind_name(n.kind)) } }
            tr { th { "size" } td { (size(n.size)) " (" (n.size) " bytes)" } }
            tr { th { "mode" } td.mono { (format!("{:04o}", n.mode & 0o7777)) } }
            tr { th { "owner" } td { (if n.user.is_empty() { n.uid.to_string() } else { format!("{} ({})", n.user, n.uid) }) ":"
                (if n.group.is_empty() { n.gid.to_string() } else { format!("{} ({})", n.group, n.gid) }) } }
            tr { th { "modified (UTC)" } td { (layout::time(n.mtime_ns)) } }
            @if n.kind == NodeKind::Symlink { tr { th { "target" } td.mono { (show(&n.link_target)) } } }
            @if n.links > 1 { tr { th { "hard links" } td { (n.links) } } }
            @for x in &n.xattrs { tr { th { "xattr " (show(&x.name)) } td.mono { (show(&x.value)) } } }
        }
        @if n.kind == NodeKind::File {
            p { a.button #download href=(format!("{}/file?p={}", snap_link(app, id), encode(path))) { "Download " (show(&n.name)) } }
        }
        (restore_form(app, caller, id, path))
    }
}

/// `GET /diff?a=OLD&b=NEW&page=N`: what changed from snapshot `a` to `b`, paged.
pub(crate) async fn diff(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = Params::parse(q.as_deref().unwrap_or(""));
    let (Some(a), Some(b)) = (q.text("a"), q.text("b")) else {
        return error_page(
            &app,
            &caller,
            StatusCode::BAD_REQUEST,
            "give two snapshots: /diff?a=OLD&b=NEW",
        );
    };
    let page: usize = q.text("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let (loaded, ia, sa) = match app.catalog.snapshot(a).await {
        Ok(x) => x,
        Err(e) => return error_page(&app, &caller, StatusCode::NOT_FOUND, &e),
    };
    let (_, ib, sb) = match app.catalog.snapshot(b).await {
        Ok(x) => x,
        Err(e) => return error_page(&app, &caller, StatusCode::NOT_FOUND, &e),
    };
    let changes = match app.catalog.diff(&loaded.index, &sa.tree, &sb.tree).await {
        Ok(c) => c,
        Err(e) => return error_page(&app, &caller, StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let counts = DiffCounts::of(&changes);
    let (start, end, page, pages) = page_bounds(changes.len(), page, PAGE_SIZE);
    let same_series = sa.host == sb.host && group_of(&sa) == group_of(&sb);
    let link = |p: usize| {
        format!(
            "{}?a={}&b={}&page={p}",
            app.link("/diff"),
            ia.to_hex(),
            ib.to_hex()
        )
    };
    let row = |c: &Change| {
        let (class, word) = match c.kind {
            ChangeKind::Added => ("ok", "added"),
            ChangeKind::Removed => ("bad", "removed"),
            ChangeKind::Modified => ("warn", "modified"),
            ChangeKind::Metadata => ("none", "metadata"),
        };
        let in_id = if c.kind == ChangeKind::Removed {
            &ia
        } else {
            &ib
        };
        html! { tr {
            td { span class={"dot " (class)} {} (word) }
            td.mono { a href=(browse_link(&app, in_id, &c.path)) { (show(&c.path)) } }
            td.num { @if let Some(s) = c.old_size { (size(s)) } }
            td.num { @if let Some(s) = c.new_size { (size(s)) } }
        } }
    };
    let body = html! {
        p { "From " a.mono href=(snap_link(&app, &ia)) { (ia.short()) } " (" (layout::time(sa.time_ns)) ") to "
            a.mono href=(snap_link(&app, &ib)) { (ib.short()) } " (" (layout::time(sb.time_ns)) ")." }
        @if !same_series { p.error { "These snapshots are not of the same host and PVC / paths: the diff compares unrelated trees." } }
        div.cards #diff-counts {
            div.card { div.v { (counts.added) } div.k { "added" } }
            div.card { div.v { (counts.removed) } div.k { "removed" } }
            div.card { div.v { (counts.modified) } div.k { "modified" } }
            div.card { div.v { (counts.metadata) } div.k { "metadata only" } }
            div.card { div.v { "+" (size(counts.bytes_added)) " / −" (size(counts.bytes_removed)) } div.k { "file bytes" } }
        }
        div.pager { span.muted { "changes " (if changes.is_empty() { 0 } else { start + 1 }) "–" (end) " of " (changes.len()) }
            @if page > 1 { a href=(link(page - 1)) { "‹ previous" } }
            @if pages > 1 { span { "page " (page) " of " (pages) } }
            @if page < pages { a href=(link(page + 1)) { "next ›" } } }
        table #changes {
            thead { tr { th { "change" } th { "path" } th.num { "old size" } th.num { "new size" } } }
            tbody { @for c in &changes[start..end] { (row(c)) } }
        }
    };
    layout::page(&app, &caller, "Diff", body).into_response()
}

/// `GET /drills`: the drill history, newest first.
pub(crate) async fn drills(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let repo = app.catalog.repo().clone();
    let hist =
        tokio::task::spawn_blocking(move || holdfast_drill::record::history(&repo, None)).await;
    let hist = match hist {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            return error_page(
                &app,
                &caller,
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            )
        }
        Err(e) => {
            return error_page(
                &app,
                &caller,
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            )
        }
    };
    let body = html! {
        @if hist.is_empty() {
            p.muted { "No drill has been recorded yet. Run " code { "holdfast drill volume" } " or " code { "holdfast drill postgres" } " (or let the agent schedule them)." }
        } @else {
            table #drills {
                thead { tr { th { "drill" } th { "kind" } th { "result" } th { "started" } th.num { "RTO (restore)" } th.num { "duration" } th.num { "restored" } th { "snapshot drilled" } th { "failure" } } }
                tbody {
                    @for d in hist.iter().rev() {
                        @let r = &d.record;
                        @let pass = r.result == holdfast_drill::DrillResult::Pass;
                        tr {
                            td { (r.name) } td { (r.kind) }
                            td { span class={"dot " (if pass { "ok" } else { "bad" })} {} (r.result.as_str()) }
                            td { (r.started) }
                            td.num { (format!("{:.1} s", r.restore_s)) }
                            td.num { (format!("{:.1} s", r.duration_s)) }
                            td.num { (r.files_restored) " files, " (size(r.bytes_restored)) }
                            td { @match Id::from_hex(&r.snapshot.id) {
                                Ok(sid) => a.mono href=(snap_link(&app, &sid)) { (sid.short()) },
                                Err(_) => span.mono { (r.snapshot.id) },
                            } " " span.muted { (r.snapshot.time) } }
                            td { @if let Some(f) = &r.failure { span.error { (f) } } }
                        }
                    }
                }
            }
        }
    };
    layout::page(&app, &caller, "Restore drills", body).into_response()
}

/// The dot class of a coverage status.
fn coverage_class(status: &str) -> &'static str {
    match status {
        "ok" => "ok",
        "external" | "opted-out" => "none",
        "stale" => "warn",
        _ => "bad",
    }
}

/// `GET /coverage`: every PVC and how it is backed up (from the agent's cluster view).
pub(crate) async fn coverage(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let Some(view) = app.state.cluster.clone() else {
        let body = html! {
            p #no-cluster { "Coverage needs the cluster: it is shown when the UI is served by the holdfast agent "
                "(which sees every PVC), or run " code { "holdfast coverage" } " where kubectl works." }
        };
        return layout::page(&app, &caller, "Coverage", body).into_response();
    };
    let rows = match view.coverage().await {
        Ok(r) => r,
        Err(e) => return error_page(&app, &caller, StatusCode::BAD_GATEWAY, &e),
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r.status.as_str()).or_default() += 1;
    }
    let body = html! {
        div.cards { @for (s, n) in &counts { div.card { div.v { span class={"dot " (coverage_class(s))} {} (n) } div.k { (s) } } } }
        table #coverage {
            thead { tr { th { "namespace" } th { "PVC" } th { "status" } th { "method" } th { "newest" } th { "detail" } } }
            tbody { @for r in &rows { tr {
                td { (r.namespace) } td { (r.pvc) }
                td { span class={"dot " (coverage_class(&r.status))} {} (r.status) }
                td { (r.method) }
                td { @if let Some(n) = &r.newest { (n) } @if let Some(a) = r.age_seconds { " " (fresh_cell(a)) } }
                td { (r.detail) }
            } } }
        }
    };
    layout::page(&app, &caller, "Coverage", body).into_response()
}
