//! The counters in the locked maps: lost updates, stale reads and the
//! final value, on hand-built histories.

use facsimile_jepsen::check::{
    AnomalyKind, check_all, check_doc_locks, check_doc_locks_with, check_run,
};
use facsimile_jepsen::history::{FaultWindow, Kind, Op};

use super::{History, assert_found, assert_valid, doc_incr, recorded};

fn fault(process: Option<u32>, kind: &str, start: u64, end: u64) -> FaultWindow {
    FaultWindow {
        process,
        kind: kind.into(),
        start,
        end,
        grace: 0,
    }
}

/// Processes 0 and 1 take lock 1 in turn and increment its counter: 0 to
/// 1, 1 to 2, one of unknown outcome reading 2, then 2 (or 3) to 3 (or
/// 4), each under its own grant; then both read the counter finally as
/// `end`, with final reads of register and list 1 so that the whole
/// history can be valid.
fn in_turn(end: u64, third_read: u64) -> History {
    let mut h = History::new();
    h.acquire(0, 1, 1)
        .doc_increment(0, Kind::Ok, 1, 1, 100, 0)
        .release(0, 1, 1)
        .acquire(1, 1, 2)
        .doc_increment(1, Kind::Ok, 1, 2, 101, 1)
        .release(1, 1, 2)
        .acquire(0, 1, 3)
        .doc_increment(0, Kind::Info, 1, 3, 102, 2)
        .release(0, 1, 3)
        .acquire(1, 1, 4)
        .doc_increment(1, Kind::Ok, 1, 4, 103, third_read)
        .release(1, 1, 4);
    for p in [0, 1] {
        h.begin_final_of(p, &[0, 1], &[1], &[1]);
    }
    for p in [0, 1] {
        h.read(p, 1, None)
            .read_list(p, 1, &[])
            .doc_read(p, 1, Some(end));
    }
    h
}

#[test]
fn holders_in_turn_with_an_increment_of_unknown_outcome_are_valid() {
    // The increment of unknown outcome took effect (the next read 3) or
    // not (it read 2).
    for (third_read, end) in [(3, 4), (2, 3)] {
        let h = in_turn(end, third_read);
        let report = check_doc_locks_with(&h.events, &[]);
        assert_valid(&report);
        assert_eq!((report.ops.ok, report.ops.info), (5, 1), "{report:#?}");
        assert_eq!(report.final_reads, 2);
        assert!(report.unchecked.is_empty(), "{report:#?}");
        assert!(report.informational.is_empty(), "{report:#?}");
        let whole = check_run(&h.events, &[]);
        assert!(whole.valid(), "{whole}");
        assert!(whole.to_string().contains("doc-locks"), "{whole}");
    }
}

#[test]
fn a_final_value_below_the_acknowledged_increments_is_too_low() {
    // Three acknowledged increments wrote 1, 2 and 4.
    let h = in_turn(2, 3);
    let report = check_doc_locks_with(&h.events, &[]);
    assert_found(&report, AnomalyKind::FinalTooLow);
    assert_eq!(report.count(AnomalyKind::FinalTooHigh), 0);
    assert!(!check_run(&h.events, &[]).valid());
}

#[test]
fn a_final_value_above_every_increment_that_may_have_taken_effect_is_too_high() {
    // Three acknowledged and one of unknown outcome: at most 4.
    let h = in_turn(5, 3);
    let report = check_doc_locks_with(&h.events, &[]);
    assert_found(&report, AnomalyKind::FinalTooHigh);
    assert_eq!(report.count(AnomalyKind::FinalTooLow), 0);
    // The one of unknown outcome failed: then 4 is too high too.
    let mut failed = in_turn(4, 2);
    for e in &mut failed.events {
        if matches!(e.op, Op::DocIncrement { id: 102, .. }) && e.kind == Kind::Info {
            e.kind = Kind::Fail;
        }
    }
    assert_found(
        &check_doc_locks_with(&failed.events, &[]),
        AnomalyKind::FinalTooHigh,
    );
}

#[test]
fn final_reads_that_disagree_diverge() {
    let mut h = in_turn(4, 3);
    let last = h.events.len() - 1;
    h.events[last].op = super::doc_read(1, Some(3));
    assert_found(
        &check_doc_locks_with(&h.events, &[]),
        AnomalyKind::Divergence,
    );
}

#[test]
fn two_holders_in_turn_reading_the_same_value_lose_an_update() {
    let mut h = History::new();
    h.acquire(0, 1, 1)
        .doc_increment(0, Kind::Ok, 1, 1, 100, 0)
        .release(0, 1, 1)
        .acquire(1, 1, 2)
        .doc_increment(1, Kind::Ok, 1, 2, 101, 0)
        .release(1, 1, 2);
    // One hold after the other: no fault explains it, whatever happened.
    for faults in [vec![], vec![fault(Some(0), "pause-client", 0, 1000)]] {
        let report = check_doc_locks_with(&h.events, &faults);
        assert_found(&report, AnomalyKind::LostUpdate);
        assert_eq!(report.count(AnomalyKind::LostUpdate), 1);
        // Process 1 also missed the write acknowledged before its grant.
        assert_found(&report, AnomalyKind::StaleRead);
    }
    // Nor when the run's faults are unknown.
    assert_found(&check_doc_locks(&h.events), AnomalyKind::LostUpdate);
}

/// Process 0 is granted lock 1 at 20 and reads 0 at 30; process 1 asks at
/// 40, is granted at 50, reads 0 and its write is acknowledged at 70;
/// process 0's is acknowledged at 80; process 1 releases at 90, process 0
/// at 110. Both read 0 and wrote 1, acknowledged, holding at once.
const OVERLAPPING_UPDATES: &str = r#"
{"process":0,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":10}
{"process":0,"kind":"ok","op":{"f":"acquire","lock":1,"token":1},"time":20}
{"process":0,"kind":"invoke","op":{"f":"doc_increment","lock":1,"token":1,"id":100,"read":null},"time":30}
{"process":1,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":40}
{"process":1,"kind":"ok","op":{"f":"acquire","lock":1,"token":2},"time":50}
{"process":1,"kind":"invoke","op":{"f":"doc_increment","lock":1,"token":2,"id":101,"read":null},"time":60}
{"process":1,"kind":"ok","op":{"f":"doc_increment","lock":1,"token":2,"id":101,"read":0},"time":70}
{"process":0,"kind":"ok","op":{"f":"doc_increment","lock":1,"token":1,"id":100,"read":0},"time":80}
{"process":1,"kind":"invoke","op":{"f":"release","lock":1,"token":2},"time":90}
{"process":1,"kind":"ok","op":{"f":"release","lock":1,"token":2},"time":100}
{"process":0,"kind":"invoke","op":{"f":"release","lock":1,"token":1},"time":110}
{"process":0,"kind":"ok","op":{"f":"release","lock":1,"token":1},"time":120}
"#;

#[test]
fn a_lost_update_of_two_holders_at_once_needs_a_fault_that_evicts_one() {
    let events = recorded(OVERLAPPING_UPDATES);
    // No fault, a fault of process 0 over before it asked, or a slow disk:
    // the lock checker's rule explains nothing, and neither does this one.
    for faults in [
        vec![],
        vec![fault(Some(0), "pause-client", 0, 5)],
        vec![fault(None, "disk-stall", 25, 45)],
    ] {
        let report = check_doc_locks_with(&events, &faults);
        assert_found(&report, AnomalyKind::LostUpdate);
        assert_eq!(report.count(AnomalyKind::ExplainedLostUpdate), 0);
    }
    // Process 0 paused between its request and process 1's grant: it lost
    // the lock without knowing, as the protocol allows.
    let paused = [fault(Some(0), "pause-client", 25, 45)];
    let report = check_doc_locks_with(&events, &paused);
    assert_valid(&report);
    assert_eq!(report.count(AnomalyKind::ExplainedLostUpdate), 1);
    assert_eq!(report.count(AnomalyKind::LostUpdate), 0);
    assert_eq!(report.explained, [("pause-client".into(), 1)].into());
    // The report says by which fault.
    let text = check_run(&events, &paused).to_string();
    assert!(
        text.contains("doc-locks: explained-lost-update x1 (information; after pause-client 1)"),
        "{text}"
    );
    // Without the run's faults, every overlap may be explained.
    let report = check_doc_locks(&events);
    assert_valid(&report);
    assert_eq!(report.count(AnomalyKind::ExplainedLostUpdate), 1);
}

/// Process 2's increment reading 0 is of unknown outcome; process 0 reads
/// 1 and writes 2, acknowledged at 100, before process 1, which asked at
/// 110, is granted at 120 and reads 0. Process 0 releases at `RELEASE`.
const STALE: &str = r#"
{"process":2,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":10}
{"process":2,"kind":"ok","op":{"f":"acquire","lock":1,"token":1},"time":20}
{"process":2,"kind":"invoke","op":{"f":"doc_increment","lock":1,"token":1,"id":200,"read":null},"time":30}
{"process":2,"kind":"info","op":{"f":"doc_increment","lock":1,"token":1,"id":200,"read":0},"time":40}
{"process":2,"kind":"invoke","op":{"f":"release","lock":1,"token":1},"time":50}
{"process":2,"kind":"ok","op":{"f":"release","lock":1,"token":1},"time":60}
{"process":0,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":70}
{"process":0,"kind":"ok","op":{"f":"acquire","lock":1,"token":2},"time":80}
{"process":0,"kind":"invoke","op":{"f":"doc_increment","lock":1,"token":2,"id":100,"read":null},"time":90}
{"process":0,"kind":"ok","op":{"f":"doc_increment","lock":1,"token":2,"id":100,"read":1},"time":100}
{"process":1,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":110}
{"process":1,"kind":"ok","op":{"f":"acquire","lock":1,"token":3},"time":120}
{"process":1,"kind":"invoke","op":{"f":"doc_increment","lock":1,"token":3,"id":101,"read":null},"time":130}
{"process":1,"kind":"ok","op":{"f":"doc_increment","lock":1,"token":3,"id":101,"read":0},"time":140}
{"process":1,"kind":"invoke","op":{"f":"release","lock":1,"token":3},"time":150}
{"process":1,"kind":"ok","op":{"f":"release","lock":1,"token":3},"time":160}
{"process":0,"kind":"invoke","op":{"f":"release","lock":1,"token":2},"time":RELEASE}
{"process":0,"kind":"ok","op":{"f":"release","lock":1,"token":2},"time":170}
"#;

#[test]
fn a_read_below_a_write_acknowledged_before_the_grant_is_stale() {
    // Process 0 released at 105, before process 1's grant: process 1 must
    // see its write, whatever the faults.
    let events = recorded(&STALE.replace("RELEASE", "105"));
    for faults in [vec![], vec![fault(Some(0), "pause-client", 75, 115)]] {
        let report = check_doc_locks_with(&events, &faults);
        assert_found(&report, AnomalyKind::StaleRead);
        assert_eq!(report.count(AnomalyKind::StaleRead), 1);
        // No two acknowledged increments read one value.
        assert_eq!(report.count(AnomalyKind::LostUpdate), 0);
    }
    // Reading 2 instead would have been right.
    let fresh = recorded(
        &STALE
            .replace("RELEASE", "105")
            .replace(r#""id":101,"read":0"#, r#""id":101,"read":2"#),
    );
    assert_valid(&check_doc_locks_with(&fresh, &[]));
}

#[test]
fn a_stale_read_is_explained_only_by_a_fault_that_let_the_holds_overlap() {
    // Process 0 releases only at 165: the holds overlap.
    let events = recorded(&STALE.replace("RELEASE", "165"));
    for faults in [vec![], vec![fault(Some(1), "pause-client", 125, 135)]] {
        assert_found(
            &check_doc_locks_with(&events, &faults),
            AnomalyKind::StaleRead,
        );
    }
    // Process 0 paused between its request and process 1's grant: its
    // write may have come after that grant.
    let report = check_doc_locks_with(&events, &[fault(Some(0), "pause-client", 102, 108)]);
    assert_valid(&report);
    assert_eq!(report.count(AnomalyKind::ExplainedStaleRead), 1);
}

#[test]
fn a_read_above_what_the_increments_could_have_written_is_a_phantom() {
    let mut h = History::new();
    h.acquire(0, 1, 1)
        .doc_increment(0, Kind::Ok, 1, 1, 100, 0)
        .release(0, 1, 1)
        .acquire(1, 1, 2)
        .doc_increment(1, Kind::Ok, 1, 2, 101, 2);
    assert_found(
        &check_doc_locks_with(&h.events, &[]),
        AnomalyKind::PhantomRead,
    );
    // A value that is no integer is a phantom too.
    let mut h = History::new();
    h.acquire(0, 1, 1).op(
        0,
        Kind::Fail,
        doc_incr(1, 1, 100, None),
        Op::DocIncrement {
            lock: 1,
            token: 1,
            id: 100,
            read: None,
            foreign: Some("\"x\"".into()),
        },
    );
    assert_found(
        &check_doc_locks_with(&h.events, &[]),
        AnomalyKind::PhantomRead,
    );
}

#[test]
fn an_increment_settled_by_a_later_flush_counts_as_acknowledged() {
    let mut h = History::new();
    h.acquire(0, 1, 1)
        .doc_increment(0, Kind::Info, 1, 1, 100, 0)
        .release(0, 1, 1)
        .settle(0, &[100], &[]);
    let report = check_doc_locks_with(&h.events, &[]);
    assert_eq!((report.ops.ok, report.ops.info), (1, 0), "{report:#?}");
    // So a final 0 lost it.
    h.begin_final_of(0, &[0], &[], &[1]).doc_read(0, 1, None);
    assert_found(
        &check_doc_locks_with(&h.events, &[]),
        AnomalyKind::FinalTooLow,
    );
}

#[test]
fn nothing_to_check_is_no_pass() {
    // No history at all.
    assert!(!check_all(&[]).valid());
    // Grants, final reads of the registers and markers that name the
    // locks, but no increment of a counter.
    let mut h = History::new();
    h.acquire(0, 1, 1)
        .release(0, 1, 1)
        .begin_final_of(0, &[0], &[1], &[1])
        .read(0, 1, None)
        .read_list(0, 1, &[])
        .doc_read(0, 1, None);
    let report = check_run(&h.events, &[]);
    assert!(report.violation_free(), "{report}");
    assert!(!report.valid(), "{report}");
    assert!(
        report
            .to_string()
            .contains("unchecked: no acknowledged increment of a locked map's counter"),
        "{report}"
    );
    // Increments but no final read of a counter.
    let mut h = History::new();
    h.acquire(0, 1, 1)
        .doc_increment(0, Kind::Ok, 1, 1, 100, 0)
        .release(0, 1, 1)
        .begin_final(0, &[0], &[1])
        .read(0, 1, None)
        .read_list(0, 1, &[]);
    let report = check_run(&h.events, &[]);
    assert!(!report.valid(), "{report}");
    assert_eq!(
        report.doc_locks.unchecked,
        ["no final read of a locked map's counter"]
    );
    // A history from before document increments (markers name no lock):
    // nothing is asked of them.
    let mut h = History::new();
    h.acquire(0, 1, 1)
        .release(0, 1, 1)
        .begin_final(0, &[0], &[1])
        .read(0, 1, None)
        .read_list(0, 1, &[]);
    let report = check_run(&h.events, &[]);
    assert!(report.valid(), "{report}");
}

#[test]
fn every_live_process_reads_every_counter_its_marker_names() {
    let mut h = in_turn(4, 3);
    // Process 1's final read of the counter is dropped.
    let last = h.events.len();
    h.events.truncate(last - 2);
    let report = check_doc_locks_with(&h.events, &[]);
    assert_found(&report, AnomalyKind::MissingFinalRead);
    assert_eq!(report.count(AnomalyKind::MissingFinalRead), 1);
}
