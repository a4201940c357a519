//! [`System`](crate::system::System) for facsimile: added once facsimile's
//! public API lands.
//!
//! The name `facsimile` is already reserved on the command line, where it
//! prints "not yet implemented" and is skipped (see [`crate::dispatch`]).
//! The implementation goes here as `pub struct Facsimile` implementing
//! `System`, plus one arm in each match of `dispatch.rs`; this workspace must
//! then depend on the facsimile crates by path.
