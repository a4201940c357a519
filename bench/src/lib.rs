//! Comparative benchmark of CRDT libraries on identical workloads.
//!
//! Each library implements [`system::System`]; the workloads in [`workload`]
//! are written once against it, so every library makes the same edits, syncs
//! the same way and is checked the same way. [`dispatch`] maps names on the
//! command line to implementations, [`report`] and [`state`] turn a run into
//! a result. The binary (`src/main.rs`) runs each pair in its own process.
//!
//! To add a library, implement [`system::System`] in a new `*_sys` module and
//! add it to [`dispatch`]; [`facsimile_sys`] is the place reserved for
//! facsimile itself.

#![forbid(unsafe_code)]

pub mod automerge_sys;
pub mod dispatch;
pub mod facsimile_sys;
pub mod loro_sys;
pub mod memory;
pub mod report;
pub mod state;
pub mod system;
pub mod workload;
pub mod yrs_sys;
