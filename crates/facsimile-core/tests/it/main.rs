//! Integration tests of the `facsimile-core` crate, one binary. The hostile
//! messages (`tests/hostile.rs`) have a binary of their own: its counting
//! allocator must not see these tests' allocations.

mod codec;
mod convergence;
mod eviction;
mod joiners;
mod lapse;
mod locks;
mod lone_writer;
mod ordered;
mod resend;
mod support;
