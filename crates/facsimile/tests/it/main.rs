//! Integration tests of the `facsimile` crate, one binary.

mod arrays;
mod events;
mod locks;
mod scenarios;
mod succession;
mod time;
mod typed;

use std::task::{Context, Poll};

use facsimile::{Config, LocalNetwork, LockFuture, LockGuard, WireFormat};
use futures_util::FutureExt;
use futures_util::task::noop_waker_ref;

/// Networks for every wire format the scenarios run under.
pub fn networks() -> Vec<(&'static str, LocalNetwork)> {
    vec![
        ("binary", LocalNetwork::with_config(Config::default())),
        (
            "json",
            LocalNetwork::with_config(Config::default().wire_format(WireFormat::Json)),
        ),
    ]
}

/// Manual-delivery networks for every wire format.
pub fn manual_networks(seed: u64) -> Vec<(&'static str, LocalNetwork)> {
    vec![
        (
            "binary",
            LocalNetwork::manual_with_config(seed, Config::default()),
        ),
        (
            "json",
            LocalNetwork::manual_with_config(seed, Config::default().wire_format(WireFormat::Json)),
        ),
    ]
}

/// A lock on a manual network: pending until the network delivers, then
/// granted.
pub fn granted(net: &LocalNetwork, mut locking: LockFuture, what: &str) -> LockGuard {
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(locking.poll_unpin(&mut cx).is_pending(), "{what}");
    net.run();
    let Poll::Ready(Ok(guard)) = locking.poll_unpin(&mut cx) else {
        panic!("{what}: granted");
    };
    guard
}
