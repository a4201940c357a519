//! HTTP on the relay's port: WebSocket upgrades at `/` join a document
//! like TCP clients do; other requests get a short page or a 404.
//!
//! The router is where pages of the relay go: the inspector of each
//! document is at `/inspect/{doc}` (see [`crate::inspect`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use facsimile::net::protocol::ByteStream;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tower::ServiceExt;

use crate::server::{Shared, run_client};
use crate::transport::Transport;

/// What a request knows of its connection.
#[derive(Clone)]
struct Conn {
    addr: SocketAddr,
    /// The connection's place under the limit, handed to the WebSocket
    /// client it turns into; `None` inside when the relay is at its limit.
    permit: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

/// The relay's HTTP routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(root))
        .merge(crate::inspect::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            within_limit,
        ))
        .with_state(shared)
}

/// Serves HTTP/1.1 on one connection until it closes, is upgraded, or the
/// relay stops.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    router: Router,
    stream: Box<dyn ByteStream>,
    addr: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
) {
    let conn = Conn {
        addr,
        permit: Arc::new(Mutex::new(permit)),
    };
    let service = hyper::service::service_fn(move |mut req| {
        req.extensions_mut().insert(conn.clone());
        router.clone().oneshot(req)
    });
    let serving = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.handshake_timeout)
        // A request's head within a hello's room, as a TCP client's hello:
        // before a token is checked, a connection holds no more (hyper's
        // default is about 400 KiB).
        .max_header_size(shared.config.hello_limit())
        // One request a connection: an idle one would hold a place under
        // the connection limit for as long as its client likes.
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        r = serving => if let Err(e) = r {
            tracing::debug!(%addr, error = %e, "HTTP connection failed");
        },
        _ = shared.stopping.cancelled() => {}
    }
}

/// `/`: a WebSocket client joins a document; anybody else is told what
/// listens here.
///
/// The upgrade is answered here rather than by axum's `WebSocketUpgrade`,
/// whose socket cannot take a smaller limit for the hello than for the
/// frames after it (see [`Transport::websocket`]).
async fn root(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    mut request: Request,
) -> Response {
    if !request.headers().contains_key(header::UPGRADE) {
        return page();
    }
    // Asked for an upgrade, but not one that can be done.
    if request.method() != Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade is a GET request\n",
        )
            .into_response();
    }
    let accept = match websocket_key(request.headers()) {
        Ok(key) => derive_accept_key(key.as_bytes()),
        Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded\n",
        )
            .into_response();
    };
    let permit = conn.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
    let (max_frame, hello_limit) = (shared.config.max_frame, shared.config.hello_limit());
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let transport =
                    Transport::websocket(TokioIo::new(upgraded), max_frame, hello_limit).await;
                run_client(shared, conn.addr, permit, transport).await;
            }
            Err(e) => tracing::debug!(addr = %conn.addr, error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    response
}

/// Answers a request on a connection over the connection limit with a
/// 503, whatever its route (the inspector's page, its status, the
/// package's files): each is a connection, and the limit bounds what the
/// relay serves at once. A WebSocket upgrade goes on: its client is
/// refused at its hello, in the protocol's words.
async fn within_limit(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let over = conn
        .permit
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_none();
    if over && !request.headers().contains_key(header::UPGRADE) {
        return at_limit(&shared);
    }
    next.run(request).await
}

/// The key of a WebSocket handshake (RFC 6455, section 4.2.1), or why the
/// request is not one.
fn websocket_key(headers: &HeaderMap) -> Result<&HeaderValue, &'static str> {
    let has = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::CONNECTION, "upgrade") {
        return Err("a WebSocket upgrade needs `Connection: upgrade`");
    }
    if !has(header::UPGRADE, "websocket") {
        return Err("only upgrades to WebSocket are served here");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("WebSocket version 13 only (Sec-WebSocket-Version: 13)");
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("a WebSocket upgrade needs a Sec-WebSocket-Key")
}

fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        concat!(
            "facsimile relay ",
            env!("CARGO_PKG_VERSION"),
            "\n\nNodes connect here over TCP (facsimile::net::connect) or over a WebSocket\n",
            "at ws:// (wss:// with TLS) on this port, one binary message per frame.\n",
        ),
    )
        .into_response()
}

fn at_limit(shared: &Shared) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the relay is at its connection limit ({}); retry later\n",
            shared.config.max_clients
        ),
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}
