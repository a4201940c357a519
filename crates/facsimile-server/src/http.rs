//! HTTP on the relay's port: WebSocket upgrades at `/` join a document
//! like TCP clients do; other requests get a short page or a 404.
//!
//! The router is where pages of the relay go (an inspector per document
//! would be `/inspect/{doc}`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use facsimile::net::protocol::ByteStream;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::OwnedSemaphorePermit;
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
        .fallback(not_found)
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
async fn root(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<Conn>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    headers: axum::http::HeaderMap,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        // Asked for an upgrade, but not one that can be done.
        Err(rejection) if headers.contains_key(header::UPGRADE) => {
            return rejection.into_response();
        }
        Err(_) => {
            if conn
                .permit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
            {
                return at_limit(&shared);
            }
            return page();
        }
    };
    let permit = conn.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
    let max_frame = shared.config.max_frame;
    ws.max_message_size(max_frame)
        .max_frame_size(max_frame)
        .on_failed_upgrade(
            move |e| tracing::debug!(addr = %conn.addr, error = %e, "WebSocket upgrade failed"),
        )
        .on_upgrade(move |socket| {
            run_client(
                shared,
                conn.addr,
                permit,
                Transport::websocket(socket, max_frame),
            )
        })
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
