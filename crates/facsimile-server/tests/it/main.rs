//! Integration tests of the relay in this process: WebSocket clients beside
//! TCP clients, the Rust client over WebSocket, hostile WebSocket input,
//! and the inspector's routes.

mod data_dir;
mod documents;
mod eviction;
mod frame_limit;
mod grace;
mod idle;
mod incarnation;
mod inspect;
mod limits;
mod listener_panic;
mod never;
mod offline;
mod partition;
mod read_only;
mod support;
mod websocket;
mod welcome;
mod ws_client;
