//! Integration tests of the relay and the `facsimile` command: each starts
//! the real `facsimile serve` binary on a free loopback port.

mod cli;
mod relay;
mod support;
