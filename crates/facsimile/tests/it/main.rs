//! Integration tests of the `facsimile` crate, one binary.

mod events;
mod locks;
mod scenarios;
mod succession;
mod time;
mod typed;

use facsimile::{Config, LocalNetwork, WireFormat};

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
