//! Arbitrary bytes as a message to a fresh replica and to one holding a
//! small document (whose peer's next messages it would apply), and as a
//! saved state. Nothing may panic; the two decoding paths (hand-written for
//! the commonest message, serde) must read the bytes alike; a refused
//! message must leave the replica's document as it was and make it send
//! nothing; afterwards the replica keeps its invariants and keeps working.

#![no_main]

use std::time::Duration;

use facsimile_core::{Config, Input, PeerId, Replica, WireFormat};
use facsimile_fuzz::small_document;
use libfuzzer_sys::fuzz_target;

fn check(r: &mut Replica, data: &[u8]) {
    while r.poll_transmit().is_some() {}
    let before = r.snapshot();
    if r.handle_message(data).is_err() {
        assert!(
            r.snapshot() == before,
            "a refused message changed the document"
        );
        assert!(
            !r.has_transmits(),
            "a refused message made the replica send"
        );
    }
    keeps_working(r);
}

fn keeps_working(r: &mut Replica) {
    while r.poll_transmit().is_some() {}
    while r.poll_event().is_some() {}
    r.handle_timeout(Duration::from_secs(60));
    r.check_invariants();
    if r.is_ready() {
        let _ = r.set_root(Input::Map(vec![("k".into(), 1.into())]));
        r.check_invariants();
    }
    let _ = r.snapshot();
    let _ = r.export_state();
}

fuzz_target!(|data: &[u8]| {
    facsimile_core::sim::check_decoders_agree(data);
    let mut fresh = Replica::new(PeerId::new("fresh", 0xf), Config::default());
    check(&mut fresh, data);
    // Half the inputs go to a replica holding a document in the encoding
    // the bytes look like, so that its peer's streams are the ones spoken.
    let format = if data.first() == Some(&b'{') {
        WireFormat::Json
    } else {
        WireFormat::Binary
    };
    let (_, mut bravo, _) = small_document(format);
    check(&mut bravo, data);
    if let Ok(mut restored) =
        Replica::from_exported(PeerId::new("restored", 0xe), Config::default(), data)
    {
        keeps_working(&mut restored);
    }
});
