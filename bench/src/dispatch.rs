//! The registry of systems: maps a name on the command line to a [`System`]
//! implementation.

use crate::automerge_sys::Automerge;
use crate::facsimile_sys::Facsimile;
use crate::loro_sys::Loro;
use crate::report::Report;
use crate::system::System;
use crate::workload::Workload;
use crate::yrs_sys::Yrs;

/// Every system name the command line accepts, in the order `all` runs them.
pub const SYSTEMS: [&str; 4] = ["yrs", "loro", "automerge", "facsimile"];

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
        "yrs" | "loro" | "automerge" | "facsimile" => Some(Availability::Ready),
        _ => None,
    }
}

/// The N `system` runs `workload` at by default, if the system is ready.
pub fn default_n(system: &str, workload: Workload) -> Option<usize> {
    match system {
        "yrs" => Some(Yrs::default_n(workload)),
        "loro" => Some(Loro::default_n(workload)),
        "automerge" => Some(Automerge::default_n(workload)),
        "facsimile" => Some(Facsimile::default_n(workload)),
        _ => None,
    }
}

/// Runs `workload` at size `n` on `system` in this process, if the system is
/// ready.
pub fn run(system: &str, workload: Workload, n: usize) -> Option<Report> {
    match system {
        "yrs" => Some(workload.run::<Yrs>(n)),
        "loro" => Some(workload.run::<Loro>(n)),
        "automerge" => Some(workload.run::<Automerge>(n)),
        "facsimile" => Some(workload.run::<Facsimile>(n)),
        _ => None,
    }
}
