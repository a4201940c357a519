//! The live inspector: `/inspect/{doc}` serves a page that joins the
//! document read-only over the relay's WebSocket (with the JavaScript
//! package's browser build) and polls `/inspect/{doc}/status` for what only
//! the relay knows: its log position, its storage and its clients.
//!
//! Both routes are behind the relay's token, given in the query
//! (`?token=…`, as the page passes it on to its WebSocket hello). The
//! page's scripts hold no document data and are served to anybody.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;

use crate::document::{Cmd, DocStatus};
use crate::server::{Found, Shared, same_secret, valid_name};
use crate::store;

/// The page: markup, script and style, compiled in (they change with the
/// relay, not with the package).
const PAGE: &str = include_str!("inspect/index.html");
const SCRIPT: &str = include_str!("inspect/inspector.js");
const STYLE: &str = include_str!("inspect/inspector.css");

/// Files of the package's build the page loads, under the assets directory.
const PACKAGE_FILES: [(&str, &str); 3] = [
    ("browser.mjs", "text/javascript; charset=utf-8"),
    ("web/facsimile_wasm.js", "text/javascript; charset=utf-8"),
    ("web/facsimile_wasm_bg.wasm", "application/wasm"),
];

/// How many statuses of closed documents are read from disk at once.
pub(crate) const STATUS_READS: usize = 2;

/// How long a status request waits for a busy document.
const STATUS_WITHIN: Duration = Duration::from_secs(5);

/// The inspector's routes, merged into the relay's router.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/inspect/{doc}", get(page))
        .route("/inspect/{doc}/status", get(status))
        .route("/inspector/{*file}", get(asset))
}

async fn page(
    State(shared): State<Arc<Shared>>,
    UrlPath(doc): UrlPath<String>,
    uri: Uri,
) -> Response {
    if let Some(refused) = refusal(&shared, &uri, &doc) {
        return refused;
    }
    let assets = &shared.config.inspector_assets;
    if !tokio::fs::try_exists(assets.join(PACKAGE_FILES[0].0))
        .await
        .unwrap_or(false)
    {
        return missing_build(assets);
    }
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response();
    private(&mut response);
    response
}

async fn status(
    State(shared): State<Arc<Shared>>,
    UrlPath(doc): UrlPath<String>,
    uri: Uri,
) -> Response {
    if let Some(refused) = refusal(&shared, &uri, &doc) {
        return refused;
    }
    let channel = match shared.find_doc(&doc) {
        Found::Open(channel) => channel,
        // Opening it would replay its log and append to it on every poll.
        Found::Stored(dir) => return closed_status(&shared, doc, dir).await,
        Found::Nowhere => {
            return json(
                StatusCode::NOT_FOUND,
                format!("{{\"error\":\"no document named {doc} on this relay\"}}"),
            );
        }
    };
    let (reply, answer) = oneshot::channel();
    let asked = tokio::time::timeout(STATUS_WITHIN, async {
        channel.join(Cmd::Status(reply)).await.ok()?;
        answer.await.ok()
    })
    .await;
    match asked {
        Ok(Some(s)) => match serde_json::to_string(&s) {
            Ok(body) => json(StatusCode::OK, body),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Ok(None) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"error\":\"the document closed\"}".into(),
        ),
        Err(_) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"error\":\"the document is busy; retry\"}".into(),
        ),
    }
}

/// The status of a closed document, from its files.
async fn closed_status(shared: &Shared, doc: String, dir: PathBuf) -> Response {
    // Each read scans the log, and takes a blocking thread: a few at once.
    let Ok(_reading) = shared.status_reads.try_acquire() else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"error\":\"the relay is reading other documents' files; retry\"}".into(),
        );
    };
    let read = tokio::task::spawn_blocking(move || store::read_on_disk(&dir)).await;
    let on_disk = match read {
        Ok(Ok(Some(d))) => d,
        Ok(Ok(None)) => {
            return json(
                StatusCode::NOT_FOUND,
                format!("{{\"error\":\"no document named {doc} on this relay\"}}"),
            );
        }
        Ok(Err(e)) => {
            tracing::warn!(doc, error = %e, "cannot read a closed document's files");
            return json(
                StatusCode::INTERNAL_SERVER_ERROR,
                "{\"error\":\"the document's files cannot be read; see the relay's log\"}".into(),
            );
        }
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let status = DocStatus {
        doc,
        open: false,
        position: on_disk.position,
        committed: on_disk.position,
        snapshot_position: on_disk.snapshot_position,
        durable: true,
        snapshot_bytes: on_disk.snapshot_bytes,
        log_bytes: on_disk.log_bytes,
        objects: None,
        clients: Vec::new(),
    };
    match serde_json::to_string(&status) {
        Ok(body) => json(StatusCode::OK, body),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn asset(State(shared): State<Arc<Shared>>, UrlPath(file): UrlPath<String>) -> Response {
    let (body, kind): (Vec<u8>, &str) = match file.as_str() {
        "inspector.js" => (SCRIPT.into(), "text/javascript; charset=utf-8"),
        "inspector.css" => (STYLE.into(), "text/css; charset=utf-8"),
        _ => {
            // Only the package's own files: the name never reaches the
            // file system unless it is one of them.
            let Some(&(name, kind)) = PACKAGE_FILES.iter().find(|(n, _)| *n == file) else {
                return (StatusCode::NOT_FOUND, "not found\n").into_response();
            };
            let assets = &shared.config.inspector_assets;
            match tokio::fs::read(assets.join(name)).await {
                Ok(bytes) => (bytes, kind),
                // Served to anybody: nothing of the relay's file system
                // (the page, behind the token, says where to build it).
                Err(_) => {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        "the inspector is not built on this relay\n",
                    )
                        .into_response();
                }
            }
        }
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Why a request for the inspector of `doc` is refused, if it is: no or a
/// wrong token (checked first, so that a stranger learns nothing of the
/// names), or a name no document can have.
fn refusal(shared: &Shared, uri: &Uri, doc: &str) -> Option<Response> {
    if let Some(refused) = token_refusal(shared, uri) {
        return Some(refused);
    }
    if !valid_name(doc) {
        return Some((StatusCode::BAD_REQUEST, "not a document name\n").into_response());
    }
    None
}

/// Checks the query's token against the relay's: the refusal, 401
/// without one and 403 with a wrong one (anybody may look when the relay
/// has no token).
fn token_refusal(shared: &Shared, uri: &Uri) -> Option<Response> {
    let expected = shared.config.token.as_ref()?;
    let given = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(percent_decode);
    let refuse = |status, why: &str| {
        let mut r = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{why}: open the URL that `facsimile inspect ADDR --doc NAME --token TOKEN` prints\n"),
        )
            .into_response();
        private(&mut r);
        r
    };
    match given {
        None => Some(refuse(
            StatusCode::UNAUTHORIZED,
            "the inspector needs the relay's token",
        )),
        Some(Some(t)) if same_secret(&t, expected.as_bytes()) => None,
        Some(_) => Some(refuse(StatusCode::FORBIDDEN, "wrong token")),
    }
}

/// Decodes a query value (`%XX` and `+`); `None` when it is malformed.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Keeps a page with a token in its URL out of caches and referrers.
fn private(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn json(status: StatusCode, body: String) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    private(&mut r);
    r
}

fn missing_build(assets: &std::path::Path) -> Response {
    let dir = html_escape(&assets.display().to_string());
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><title>facsimile inspector: not built</title>\
             <h1>The inspector is not built</h1>\
             <p>The inspector runs on the JavaScript package's browser build, which is not in \
             <code>{dir}</code>. Build it from the source tree with \
             <code>cd js &amp;&amp; npm ci &amp;&amp; npm run build</code>, or start the relay \
             with <code>--inspector-assets DIR</code> naming a built <code>js/dist</code>.</p>\n"
        ),
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_decode_and_malformed_ones_do_not() {
        assert_eq!(percent_decode("s3cret").as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(percent_decode("a%2Bb+c").as_deref(), Some(&b"a+b c"[..]));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%é"), None);
    }
}
