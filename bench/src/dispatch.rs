//! The registry of systems: maps a name on the command line to a [`System`]
//! implementation.

use crate::automerge_sys::Automerge;
use crate::facsimile_sys::Facsimile;
use crate::loro_sys::Loro;
use crate::report::Report;
use crate::system::System;
use crate::workload::Workload;
use crate::yrs_sys::{Yrs, YrsV2};

/// Every system name the command line accepts, in the order `all` runs them.
pub const SYSTEMS: [&str; 5] = ["yrs", "yrs-v2", "loro", "automerge", "facsimile"];

/// Whether a known system can run yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// The system is implemented.
    Ready,
    /// The name is reserved but the implementation has not landed.
    NotYetImplemented,
}

/// Whether `system` can run, or `None` if the name is unknown.
pub fn availability(system: &str) -> Option<Availability> {
    match system {
        "yrs" | "yrs-v2" | "loro" | "automerge" | "facsimile" => Some(Availability::Ready),
        _ => None,
    }
}

/// The N `system` runs `workload` at by default, if the system is ready.
pub fn default_n(system: &str, workload: Workload) -> Option<usize> {
    match system {
        "yrs" => Some(Yrs::default_n(workload)),
        "yrs-v2" => Some(YrsV2::default_n(workload)),
        "loro" => Some(Loro::default_n(workload)),
        "automerge" => Some(Automerge::default_n(workload)),
        "facsimile" => Some(Facsimile::default_n(workload)),
        _ => None,
    }
}

/// Runs `workload` at size `n` on `system` in this process, if the system is
/// ready; `phases` as in [`Workload::run`].
pub fn run(system: &str, workload: Workload, n: usize, phases: bool) -> Option<Report> {
    match system {
        "yrs" => Some(workload.run::<Yrs>(n, phases)),
        "yrs-v2" => Some(workload.run::<YrsV2>(n, phases)),
        "loro" => Some(workload.run::<Loro>(n, phases)),
        "automerge" => Some(workload.run::<Automerge>(n, phases)),
        "facsimile" => Some(workload.run::<Facsimile>(n, phases)),
        _ => None,
    }
}

/// Runs [`crate::memory::element_memory`] on `system`, if the system is
/// ready.
pub fn element_memory(
    system: &str,
    build: crate::memory::Build,
    n: usize,
    pair: bool,
    heap: fn() -> u64,
) -> Option<String> {
    use crate::memory::element_memory;
    match system {
        "yrs" => Some(element_memory::<Yrs>(build, n, pair, heap)),
        "yrs-v2" => Some(element_memory::<YrsV2>(build, n, pair, heap)),
        "loro" => Some(element_memory::<Loro>(build, n, pair, heap)),
        "automerge" => Some(element_memory::<Automerge>(build, n, pair, heap)),
        "facsimile" => Some(element_memory::<Facsimile>(build, n, pair, heap)),
        _ => None,
    }
}
