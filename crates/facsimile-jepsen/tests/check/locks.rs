use facsimile_jepsen::check::{AnomalyKind, check_locks, check_locks_with, check_run};
use facsimile_jepsen::history::{Event, FaultWindow, Kind, LockFailure, Op};

use super::{History, assert_found, assert_valid, incr, recorded};

#[test]
fn paused_holders_refused_increments_and_unknown_outcomes_are_no_anomaly() {
    let mut h = History::new();
    h.acquire(0, 1, 1)
        .increment(0, 1, 1, 0)
        // Waits while process 0 holds the lock.
        .invoke(
            1,
            Op::Acquire {
                lock: 1,
                token: None,
            },
        )
        .increment(0, 1, 1, 1)
        .release(0, 1, 1)
        .end(
            1,
            Kind::Ok,
            Op::Acquire {
                lock: 1,
                token: Some(2),
            },
        )
        // Process 1's increment is accepted, then it is paused past its
        // lease before recording so; process 2 gets the lock meanwhile.
        .invoke(1, incr(1, 2, None))
        .acquire(2, 1, 3)
        .increment(2, 1, 3, 3)
        .end(1, Kind::Ok, incr(1, 2, Some(2)))
        // Back, process 1 still thinks it holds the lock: refused.
        .op(1, Kind::Fail, incr(1, 2, None), incr(1, 2, None))
        // Accepted, but the reply was lost.
        .op(2, Kind::Info, incr(1, 3, None), incr(1, 3, None))
        .increment(2, 1, 3, 5)
        .release(2, 1, 3)
        // A crash while waiting for the lock.
        .invoke(
            3,
            Op::Acquire {
                lock: 1,
                token: None,
            },
        );
    let report = check_locks(&h.events);
    assert_valid(&report);
    assert_eq!(report.count(AnomalyKind::OverlappingHolders), 1);
    assert_eq!(report.count(AnomalyKind::OverlappingIncrements), 1);
    assert_eq!(
        (report.ops.ok, report.ops.fail, report.ops.info),
        (10, 1, 2)
    );
}

#[test]
fn two_holders_incrementing_in_turn_are_caught() {
    let mut h = History::new();
    h.acquire(0, 1, 1)
        .increment(0, 1, 1, 0)
        .acquire(1, 1, 2)
        .increment(1, 1, 2, 1)
        .increment(0, 1, 1, 2);
    let report = check_locks(&h.events);
    assert_found(&report, AnomalyKind::InterleavedHolders);
    assert_found(&report, AnomalyKind::StaleIncrementAccepted);
}

#[test]
fn a_later_grant_with_a_smaller_token_is_a_regression() {
    let mut h = History::new();
    h.acquire(0, 1, 5).release(0, 1, 5).acquire(1, 1, 3);
    let report = check_locks(&h.events);
    assert_found(&report, AnomalyKind::TokenRegression);
    // Concurrent grants may complete in either order.
    let mut h = History::new();
    h.invoke(
        0,
        Op::Acquire {
            lock: 1,
            token: None,
        },
    )
    .acquire(1, 1, 5)
    .end(
        0,
        Kind::Ok,
        Op::Acquire {
            lock: 1,
            token: Some(3),
        },
    );
    assert_valid(&check_locks(&h.events));
}

#[test]
fn a_token_granted_twice_is_a_duplicate() {
    let mut h = History::new();
    h.acquire(0, 1, 5).release(0, 1, 5).acquire(1, 1, 5);
    assert_found(&check_locks(&h.events), AnomalyKind::DuplicateToken);
}

#[test]
fn an_accepted_stale_token_is_caught() {
    let mut h = History::new();
    h.increment(0, 1, 2, 0).increment(1, 1, 1, 1);
    let report = check_locks(&h.events);
    assert_found(&report, AnomalyKind::StaleIncrementAccepted);
    assert_eq!(report.count(AnomalyKind::InterleavedHolders), 0);
}

#[test]
fn two_increments_reading_the_same_value_lose_one() {
    let mut h = History::new();
    h.increment(0, 1, 1, 0).increment(1, 1, 2, 0);
    assert_found(&check_locks(&h.events), AnomalyKind::LostIncrement);
}

#[test]
fn an_increment_writes_one_more_than_it_read() {
    let mut h = History::new();
    h.op(
        0,
        Kind::Ok,
        incr(1, 1, None),
        Op::Increment {
            counter: 1,
            token: 1,
            read: Some(0),
            wrote: Some(2),
        },
    );
    assert_found(&check_locks(&h.events), AnomalyKind::BadIncrement);
}

#[test]
fn a_jump_without_unknown_increments_is_unexplained() {
    let mut h = History::new();
    h.increment(0, 1, 1, 0).increment(0, 1, 1, 5);
    assert_found(&check_locks(&h.events), AnomalyKind::UnexplainedIncrement);
}

#[test]
fn the_storage_order_follows_real_time() {
    let mut h = History::new();
    h.increment(0, 1, 1, 1).increment(0, 1, 1, 0);
    assert_found(&check_locks(&h.events), AnomalyKind::CounterOrder);
}

/// Process 0 holds lock 1 (token 1) when process 1 is granted it (token 2);
/// then process 0 releases, with `release` as the outcome.
fn overlap(release: Kind) -> History {
    let mut h = History::new();
    let r0 = Op::Release { lock: 1, token: 1 };
    h.acquire(0, 1, 1)
        .increment(0, 1, 1, 0)
        .acquire(1, 1, 2)
        .op(0, release, r0.clone(), r0)
        .increment(1, 1, 2, 1)
        .release(1, 1, 2);
    h
}

fn fault(process: Option<u32>, kind: &str, start: u64, end: u64) -> FaultWindow {
    FaultWindow {
        process,
        kind: kind.into(),
        start,
        end,
        grace: 0,
    }
}

#[test]
fn an_overlap_is_two_holders_at_once_unless_a_fault_explains_it() {
    // Acknowledged or not, a release says nothing: an evicted node's lost
    // release is not reported.
    for release in [Kind::Ok, Kind::Fail] {
        let h = overlap(release);
        // Without the run's faults every overlap may be explained.
        let report = check_locks(&h.events);
        assert_valid(&report);
        assert_eq!(report.count(AnomalyKind::OverlappingHolders), 1);
        // Events every 10 ns from 10: process 0 asks at 10, is granted at
        // 20; process 1 asks at 50, is granted at 60; process 0 releases
        // at 70.
        // No fault at all, or one of the later holder after its grant, or
        // while it waited but after the earlier grant (it was granted
        // after), or of the earlier one before it asked: a violation.
        for faults in [
            vec![],
            vec![fault(Some(1), "pause-client", 61, 90)],
            vec![fault(Some(1), "pause-client", 52, 58)],
            vec![fault(Some(0), "pause-client", 0, 9)],
            vec![fault(Some(2), "kill-client", 10, 90)],
        ] {
            let report = check_locks_with(&h.events, &faults);
            assert_found(&report, AnomalyKind::ConcurrentHolders);
        }
        // Process 0 paused while it held the lock, or a server fault: the
        // lock passed on without its holder's knowing, as the protocol
        // allows.
        for faults in [
            vec![fault(Some(0), "pause-client", 35, 45)],
            vec![fault(None, "kill-relay", 35, 45)],
        ] {
            let report = check_locks_with(&h.events, &faults);
            assert_valid(&report);
            assert_eq!(report.count(AnomalyKind::OverlappingHolders), 1);
        }
    }
    // Holders one after the other are no overlap, faults or not.
    let mut h = History::new();
    h.acquire(0, 1, 1)
        .increment(0, 1, 1, 0)
        .release(0, 1, 1)
        .acquire(1, 1, 2)
        .increment(1, 1, 2, 1)
        .release(1, 1, 2);
    let report = check_locks_with(&h.events, &[]);
    assert_valid(&report);
    assert_eq!(report.count(AnomalyKind::OverlappingHolders), 0);
}

#[test]
fn a_paused_holder_does_not_hide_two_others_overlapping() {
    // Events every 10 ns from 10: process 0 is granted at 20 and releases
    // at 110; process 1 holds from 40 to 70, process 2 from 60 to 90.
    let mut h = History::new();
    h.acquire(0, 1, 1)
        .acquire(1, 1, 2)
        .acquire(2, 1, 3)
        .release(1, 1, 2)
        .release(2, 1, 3)
        .release(0, 1, 1);
    // Process 0's pause explains its overlaps with both, not theirs.
    let faults = [fault(Some(0), "pause-client", 25, 100)];
    let report = check_locks_with(&h.events, &faults);
    assert_found(&report, AnomalyKind::ConcurrentHolders);
    assert_eq!(report.count(AnomalyKind::ConcurrentHolders), 1);
    assert_eq!(report.count(AnomalyKind::OverlappingHolders), 2);
    // As without process 0.
    let without: Vec<_> = h
        .events
        .iter()
        .filter(|e| e.process != 0)
        .cloned()
        .collect();
    assert_found(
        &check_locks_with(&without, &faults),
        AnomalyKind::ConcurrentHolders,
    );
}

/// Process 0 is granted lock 1 at 20 and releases it at 110; process 1
/// asks at 30, once that grant is known, and is granted at 90.
const GRANTED_AFTER_ASKING_LATE: &str = r#"
{"process":0,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":10}
{"process":0,"kind":"ok","op":{"f":"acquire","lock":1,"token":1},"time":20}
{"process":1,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":30}
{"process":1,"kind":"ok","op":{"f":"acquire","lock":1,"token":2},"time":90}
{"process":1,"kind":"invoke","op":{"f":"release","lock":1,"token":2},"time":100}
{"process":1,"kind":"ok","op":{"f":"release","lock":1,"token":2},"time":105}
{"process":0,"kind":"invoke","op":{"f":"release","lock":1,"token":1},"time":110}
{"process":0,"kind":"ok","op":{"f":"release","lock":1,"token":1},"time":120}
"#;

#[test]
fn a_fault_of_the_later_holder_explains_an_overlap_only_if_it_could_have_been_granted_first() {
    let events = recorded(GRANTED_AFTER_ASKING_LATE);
    // Process 1 asked after process 0's grant was known: it was granted
    // after, whatever befell it while it waited. Its eviction could cost
    // it its own lock, never process 0's.
    let paused = [fault(Some(1), "pause-client", 40, 80)];
    assert_found(
        &check_locks_with(&events, &paused),
        AnomalyKind::ConcurrentHolders,
    );
    // Asked before: it may have been granted first, evicted while paused,
    // and learned of its grant only after process 0's.
    let asked_early = recorded(&GRANTED_AFTER_ASKING_LATE.replace(r#""time":30"#, r#""time":15"#));
    let report = check_locks_with(&asked_early, &[fault(Some(1), "pause-client", 16, 80)]);
    assert_valid(&report);
    assert_eq!(report.count(AnomalyKind::OverlappingHolders), 1);
    // Paused only once process 0's grant was known: too late to matter.
    assert_found(
        &check_locks_with(&asked_early, &[fault(Some(1), "pause-client", 40, 80)]),
        AnomalyKind::ConcurrentHolders,
    );
}

/// Process 0 holds lock 1 from 110 to 400, process 1 from 210 to 300.
const NESTED_HOLDERS: &str = r#"
{"process":0,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":100}
{"process":0,"kind":"ok","op":{"f":"acquire","lock":1,"token":1},"time":110}
{"process":1,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":200}
{"process":1,"kind":"ok","op":{"f":"acquire","lock":1,"token":2},"time":210}
{"process":1,"kind":"invoke","op":{"f":"release","lock":1,"token":2},"time":300}
{"process":1,"kind":"ok","op":{"f":"release","lock":1,"token":2},"time":310}
{"process":0,"kind":"invoke","op":{"f":"release","lock":1,"token":1},"time":400}
{"process":0,"kind":"ok","op":{"f":"release","lock":1,"token":1},"time":410}
"#;

#[test]
fn only_a_fault_that_can_evict_a_holder_while_the_lock_passed_explains_an_overlap() {
    let events = recorded(NESTED_HOLDERS);
    // A slow or stalled disk delays acknowledgements and evicts nobody; a
    // fault over before process 0 asked cost it nothing.
    for faults in [
        vec![fault(None, "disk-slow", 90, 101)],
        vec![fault(None, "disk-slow", 150, 160)],
        vec![fault(None, "disk-stall", 150, 160)],
        vec![fault(None, "kill-relay", 50, 60)],
        vec![fault(Some(0), "pause-client", 50, 60)],
    ] {
        assert_found(
            &check_locks_with(&events, &faults),
            AnomalyKind::ConcurrentHolders,
        );
    }
    for faults in [
        vec![fault(None, "kill-relay", 150, 160)],
        vec![fault(Some(0), "partition-client", 150, 160)],
        vec![fault(Some(0), "pause-client", 205, 300)],
    ] {
        let report = check_locks_with(&events, &faults);
        assert_valid(&report);
        assert_eq!(report.count(AnomalyKind::OverlappingHolders), 1);
        let kind = faults[0].kind.clone();
        assert_eq!(report.explained, [(kind, 1)].into(), "{report:#?}");
    }
    // An eviction may follow a heal by up to the failure detection.
    let late = FaultWindow {
        grace: 40,
        ..fault(None, "kill-relay", 50, 60)
    };
    assert_valid(&check_locks_with(&events, std::slice::from_ref(&late)));
    let text = check_run(&events, &[late]).to_string();
    assert!(
        text.contains("locks: overlapping-holders x1 (information; after kill-relay 1)"),
        "{text}"
    );
}

/// Process 0 holds lock 1 with token 5 from 110 to 140; process 1, which
/// asked at 105, holds it with token 3 from 160, and the storage refuses
/// its increment as stale.
const LOWER_TOKEN_AFTER: &str = r#"
{"process":0,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":100}
{"process":0,"kind":"ok","op":{"f":"acquire","lock":1,"token":5},"time":110}
{"process":0,"kind":"invoke","op":{"f":"increment","counter":1,"token":5,"read":null,"wrote":null},"time":120}
{"process":0,"kind":"ok","op":{"f":"increment","counter":1,"token":5,"read":0,"wrote":1},"time":130}
{"process":0,"kind":"invoke","op":{"f":"release","lock":1,"token":5},"time":140}
{"process":0,"kind":"ok","op":{"f":"release","lock":1,"token":5},"time":150}
{"process":1,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":105}
{"process":1,"kind":"ok","op":{"f":"acquire","lock":1,"token":3},"time":160}
{"process":1,"kind":"invoke","op":{"f":"increment","counter":1,"token":3,"read":null,"wrote":null},"time":170}
{"process":1,"kind":"fail","op":{"f":"increment","counter":1,"token":3,"read":null,"wrote":null},"time":180,"error":"Stale"}
{"process":1,"kind":"invoke","op":{"f":"release","lock":1,"token":3},"time":190}
{"process":1,"kind":"ok","op":{"f":"release","lock":1,"token":3},"time":200}
"#;

#[test]
fn a_hold_after_another_carries_a_higher_token_and_a_refusal_needs_an_eviction() {
    let events = recorded(LOWER_TOKEN_AFTER);
    let report = check_locks_with(&events, &[]);
    assert_found(&report, AnomalyKind::TokenRegression);
    assert_found(&report, AnomalyKind::StaleRefusal);
    // Process 1 paused while it waited, before process 0's grant: it may
    // have been granted token 3 first, evicted, and told of its grant
    // late; the storage then refused it, as fencing should.
    let report = check_locks_with(&events, &[fault(Some(1), "pause-client", 106, 108)]);
    assert_valid(&report);
    assert_eq!(report.count(AnomalyKind::OverlappingHolders), 1);
    assert_eq!(report.count(AnomalyKind::FencedRefusal), 1);
    assert_eq!(report.explained, [("pause-client".into(), 1)].into());
    // Paused only after process 0's grant: granted after it, so not with
    // a lower token; and the refusal still has its eviction to explain.
    let report = check_locks_with(&events, &[fault(Some(1), "pause-client", 150, 155)]);
    assert_found(&report, AnomalyKind::TokenRegression);
    assert_eq!(report.count(AnomalyKind::StaleRefusal), 0);
    // Without the run's faults, both are information.
    let report = check_locks(&events);
    assert_valid(&report);
    assert_eq!(report.count(AnomalyKind::FencedRefusal), 1);
}

#[test]
fn a_stale_refusal_of_a_holder_no_fault_evicted_is_two_holders_at_once() {
    // Process 0 holds lock 1 (token 1) when the storage refuses it: some
    // holder of a higher token worked meanwhile.
    let mut h = History::new();
    h.acquire(0, 1, 1).invoke(0, incr(1, 1, None)).invoke(
        1,
        Op::Acquire {
            lock: 1,
            token: None,
        },
    );
    let at = h.events.last().unwrap().time;
    h.events.push(Event {
        process: 0,
        kind: Kind::Fail,
        op: incr(1, 1, None),
        time: at + 10,
        error: Some(LockFailure::Stale),
    });
    assert_found(&check_locks_with(&h.events, &[]), AnomalyKind::StaleRefusal);
    // A slow disk evicts nobody; a cut of process 0 may have.
    assert_found(
        &check_locks_with(&h.events, &[fault(None, "disk-slow", 0, at)]),
        AnomalyKind::StaleRefusal,
    );
    let report = check_locks_with(&h.events, &[fault(Some(0), "partition-client", 25, 26)]);
    assert_valid(&report);
    assert_eq!(report.count(AnomalyKind::FencedRefusal), 1);
}

#[test]
fn an_accepted_increment_without_the_value_read_is_malformed() {
    let mut h = History::new();
    h.op(
        0,
        Kind::Ok,
        incr(1, 1, None),
        Op::Increment {
            counter: 1,
            token: 1,
            read: None,
            wrote: Some(1),
        },
    );
    assert_found(&check_locks(&h.events), AnomalyKind::Malformed);
}
