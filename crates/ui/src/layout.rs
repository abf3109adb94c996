//! The page frame (header, navigation, footer), the style sheet and small formatting
//! helpers shared by the pages.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use crate::auth::{Caller, Role};
use crate::App;

/// The style sheet: small, served by the binary itself (no CDN).
const CSS: &str = r#"
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f7f8fa;--ok:#12805c;--warn:#b7791f;--bad:#c53030;--accent:#2b59c3}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#1d2330;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap}
header a{color:#dfe6f5;text-decoration:none}header a:hover{color:#fff}
header .brand{font-weight:700;font-size:1.05rem;color:#fff}
header .repo{color:#9aa4b8;font-size:.85rem;margin-left:auto}
header form{margin:0}header button{background:none;border:1px solid #56607a;color:#dfe6f5;border-radius:4px;padding:.15rem .5rem;cursor:pointer}
main{padding:1rem 1.2rem;max-width:1300px;margin:0 auto}
h1{font-size:1.3rem;margin:.3rem 0 1rem}h2{font-size:1.1rem;margin:1.4rem 0 .6rem}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid var(--line)}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f0f2f5;font-weight:600;font-size:.85rem;color:#344054}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:hover td{background:#fafbff}
a{color:var(--accent)}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em}
.muted{color:var(--muted)}
.tag{display:inline-block;background:#eef2fb;color:#34466f;border-radius:3px;padding:0 .35rem;margin:0 .2rem .1rem 0;font-size:.8rem}
.fresh{font-weight:600}.fresh.ok{color:var(--ok)}.fresh.warn{color:var(--warn)}.fresh.bad{color:var(--bad)}
.dot{display:inline-block;width:.65rem;height:.65rem;border-radius:50%;margin-right:.35rem;vertical-align:middle}
.dot.ok{background:var(--ok)}.dot.warn{background:var(--warn)}.dot.bad{background:var(--bad)}.dot.none{background:#98a2b3}
.cards{display:flex;gap:.8rem;flex-wrap:wrap;margin-bottom:.6rem}
.card{background:#fff;border:1px solid var(--line);border-radius:6px;padding:.6rem .9rem;min-width:10rem}
.card .v{font-size:1.25rem;font-weight:650}.card .k{color:var(--muted);font-size:.8rem}
.crumbs{margin:.2rem 0 .8rem;font-size:1rem}.crumbs a{text-decoration:none}
.pager{margin:.6rem 0;display:flex;gap:.6rem;align-items:center}
.error{color:var(--bad);font-weight:600}.okmsg{color:var(--ok);font-weight:600}
.panel{background:#fff;border:1px solid var(--line);border-radius:6px;padding:.8rem 1rem;margin:.8rem 0}
form.inline{display:inline}
input[type=text],input[type=password]{padding:.35rem .5rem;border:1px solid #c9ced8;border-radius:4px;min-width:22rem;font:inherit}
button{background:var(--accent);color:#fff;border:0;border-radius:4px;padding:.35rem .8rem;font:inherit;cursor:pointer}
a.button{display:inline-block;background:var(--accent);color:#fff;border-radius:4px;padding:.35rem .8rem;text-decoration:none}
button.secondary{background:#fff;color:var(--accent);border:1px solid var(--accent)}
form.login{background:#fff;border:1px solid var(--line);border-radius:8px;padding:1.4rem;max-width:26rem;margin:4rem auto;display:flex;flex-direction:column;gap:.6rem}
form.login input{min-width:0}
.bar{background:#e4e7ec;border-radius:4px;height:.8rem;width:20rem;overflow:hidden}.bar>div{background:var(--accent);height:100%}
.growth td.bar-cell div{background:#9db4e8;height:.7rem;border-radius:2px}
"#;

/// `GET /style.css`.
pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

fn head(app: &App, title: &str, refresh: Option<u32>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            @if let Some(r) = refresh { meta http-equiv="refresh" content=(r); }
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="same-origin";
            title { (title) " · holdfast" }
            link rel="stylesheet" href=(app.link("/style.css"));
        }
    }
}

/// A full page with navigation, for `caller`.
pub(crate) fn page(app: &App, caller: &Caller, title: &str, body: Markup) -> Html<String> {
    page_with(app, caller, title, None, body)
}

/// [`page`] that reloads itself every `refresh` seconds (job progress).
pub(crate) fn page_with(
    app: &App,
    caller: &Caller,
    title: &str,
    refresh: Option<u32>,
    body: Markup,
) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(app, title, refresh))
                body {
                    header {
                        a.brand href=(app.link("/")) { "holdfast" }
                        a href=(app.link("/")) { "Snapshots" }
                        a href=(app.link("/coverage")) { "Coverage" }
                        a href=(app.link("/drills")) { "Drills" }
                        a href=(app.link("/jobs")) { "Jobs" }
                        span.repo { (app.state.title) " · role " (caller.role.as_str()) }
                        @if caller.can_logout {
                            form method="post" action=(app.link("/logout")) {
                                (csrf(caller))
                                button #logout type="submit" { "Log out" }
                            }
                        }
                    }
                    main { h1 { (title) } (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A page without navigation (login, errors before a session exists).
pub(crate) fn bare(app: &App, title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(app, title, None))
                body {
                    header { a.brand href=(app.link("/")) { "holdfast" } span.repo { (app.state.title) } }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// The hidden CSRF field every POST form carries.
pub(crate) fn csrf(caller: &Caller) -> Markup {
    html! { input type="hidden" name="csrf" value=(caller.csrf); }
}

/// Whether the caller may restore.
pub(crate) fn can_restore(caller: &Caller) -> bool {
    caller.role >= Role::Restore
}

/// Bytes for people (`1.5 MiB`).
pub(crate) fn size(b: u64) -> String {
    humansize::format_size(b, humansize::BINARY)
}

/// An age in seconds for people (`3 h`, `2 d`).
pub(crate) fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 3 * 86400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

/// The freshness class of a newest snapshot this old: `ok` within 26 hours (a daily
/// schedule with slack), `warn` within 3 days, else `bad`.
pub(crate) fn freshness(secs: u64) -> &'static str {
    match secs {
        s if s <= 26 * 3600 => "ok",
        s if s <= 3 * 86400 => "warn",
        _ => "bad",
    }
}

/// Seconds since `time_ns` (0 if it is in the future).
pub(crate) fn age_of(time_ns: i64) -> u64 {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    (now.saturating_sub(time_ns).max(0) / 1_000_000_000) as u64
}

/// A time in ns as `YYYY-MM-DD HH:MM:SS` UTC.
pub(crate) fn time(ns: i64) -> String {
    chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ns.to_string())
}
