//! Integration tests of the relay in this process: WebSocket clients beside
//! TCP clients, hostile WebSocket input, and the inspector's routes.

mod inspect;
mod read_only;
mod support;
mod websocket;
