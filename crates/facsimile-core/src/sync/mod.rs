//! The sync handshake, by which a replica that dropped its state (a joiner)
//! gets the document from exactly one peer.
//!
//! The joiner broadcasts a sync request; every live peer, one syncing
//! itself too, answers with a small offer, sequenced so that whoever reads
//! it has everything the offerer sent before; the joiner fetches the state
//! from the first offerer only. The answer carries, for every sender, the
//! stream position it covers; the joiner applies what it buffered meanwhile
//! beyond those positions, and asks senders to resend anything it missed in
//! between.
//!
//! - [`Joining`]: the joiner's side, a phase of the replica;
//! - [`SyncServer`]: serving joiners, which waits until every member has
//!   offered or left (then everything they sent before the joiner listened
//!   is applied here) and no operation waits for a dependency;
//! - [`transfer`]: the state as it travels, and its validation.

mod join;
pub(crate) mod saved;
mod serve;
pub(crate) mod transfer;

pub(crate) use join::{Before, Joining, Phase, Retry};
pub(crate) use serve::{SyncServer, SyncWait};
