//! Integration tests of the relay in this process: WebSocket clients beside
//! TCP clients, and hostile WebSocket input.

mod read_only;
mod support;
mod websocket;
