use facsimile_jepsen::check::{AnomalyKind, check_lists};
use facsimile_jepsen::history::{Kind, Op};

use super::{History, assert_found, assert_valid, recorded};

#[test]
fn concurrent_unknown_failed_and_crashed_appends_are_no_anomaly() {
    let mut h = History::new();
    h.read_list(0, 1, &[])
        .append(0, Kind::Ok, 1, 1)
        .invoke(1, Op::Append { key: 1, element: 2 })
        .read_list(0, 1, &[1])
        .end(1, Kind::Ok, Op::Append { key: 1, element: 2 })
        .read_list(1, 1, &[1, 2])
        .read_list(0, 1, &[1, 2])
        // A process killed mid-run: its last read is not a final one.
        .read_list(4, 1, &[1])
        // An append of unknown outcome, seen locally, dropped on rejoining.
        .append(2, Kind::Info, 1, 3)
        .read_list(2, 1, &[1, 2, 3])
        .read_list(2, 1, &[1, 2])
        .append(0, Kind::Fail, 1, 5)
        // Cut short by a crash, yet it reached the relay.
        .invoke(3, Op::Append { key: 1, element: 4 })
        .all_final(&[0, 1, 2], &[1])
        .read_list(0, 1, &[1, 2, 4])
        .read_list(1, 1, &[1, 2, 4])
        .read_list(2, 1, &[1, 2, 4]);
    let report = check_lists(&h.events);
    assert_valid(&report);
    assert_eq!(report.final_reads, 3);
    assert_eq!(
        (report.ops.ok, report.ops.fail, report.ops.info),
        (12, 1, 2)
    );
}

#[test]
fn an_acknowledged_append_missing_from_final_reads_is_lost() {
    let mut h = History::new();
    h.append(0, Kind::Ok, 1, 1)
        .append(0, Kind::Ok, 1, 2)
        .all_final(&[1, 2], &[1])
        .read_list(1, 1, &[1])
        .read_list(2, 1, &[1]);
    let report = check_lists(&h.events);
    assert_found(&report, AnomalyKind::LostWrite);
    assert_eq!(report.count(AnomalyKind::LostWrite), 1);
}

#[test]
fn an_element_read_twice_is_a_duplicate() {
    let mut h = History::new();
    h.append(0, Kind::Ok, 1, 1)
        .append(0, Kind::Ok, 1, 2)
        .read_list(1, 1, &[1, 2, 1]);
    let report = check_lists(&h.events);
    assert_found(&report, AnomalyKind::DuplicateElement);
    assert_eq!(report.count(AnomalyKind::OrderFlip), 0);
}

#[test]
fn two_elements_in_both_orders_are_a_flip() {
    let mut h = History::new();
    h.append(0, Kind::Ok, 1, 1)
        .append(1, Kind::Ok, 1, 2)
        .append(1, Kind::Ok, 1, 3)
        .read_list(2, 1, &[1, 3, 2])
        .read_list(3, 1, &[2, 1, 3]);
    let report = check_lists(&h.events);
    assert_found(&report, AnomalyKind::OrderFlip);
    // Pairwise consistent reads can still admit no single order.
    let mut h = History::new();
    h.append(0, Kind::Ok, 1, 1)
        .append(0, Kind::Ok, 1, 2)
        .append(0, Kind::Ok, 1, 3)
        .read_list(1, 1, &[1, 2])
        .read_list(2, 1, &[2, 3])
        .read_list(3, 1, &[3, 1]);
    assert_found(&check_lists(&h.events), AnomalyKind::OrderFlip);
}

#[test]
fn an_element_nobody_appended_is_a_phantom() {
    let mut h = History::new();
    h.append(0, Kind::Ok, 1, 1)
        .append(0, Kind::Ok, 2, 7)
        .read_list(1, 1, &[1, 7]);
    assert_found(&check_lists(&h.events), AnomalyKind::PhantomRead);
}

#[test]
fn a_failed_append_must_stay_invisible() {
    let mut h = History::new();
    h.append(0, Kind::Fail, 1, 5).read_list(1, 1, &[5]);
    assert_found(&check_lists(&h.events), AnomalyKind::FailedWriteVisible);
}

#[test]
fn a_process_reads_its_acknowledged_appends() {
    let mut h = History::new();
    h.append(0, Kind::Ok, 1, 1)
        .append(1, Kind::Ok, 1, 2)
        .read_list(0, 1, &[2]);
    assert_found(&check_lists(&h.events), AnomalyKind::ReadYourWrites);
}

#[test]
fn a_seen_element_does_not_vanish() {
    let mut h = History::new();
    h.append(1, Kind::Ok, 1, 1)
        .append(1, Kind::Info, 1, 2)
        .read_list(0, 1, &[1, 2])
        .read_list(0, 1, &[1]);
    assert_found(&check_lists(&h.events), AnomalyKind::NonMonotonicRead);
}

#[test]
fn final_reads_must_agree() {
    let mut h = History::new();
    h.append(0, Kind::Ok, 1, 1)
        .append(2, Kind::Info, 1, 3)
        .all_final(&[0, 1], &[1])
        .read_list(0, 1, &[1])
        .read_list(1, 1, &[1, 3]);
    assert_found(&check_lists(&h.events), AnomalyKind::Divergence);
}

#[test]
fn an_append_of_unknown_outcome_seen_by_another_process_is_durable() {
    let mut h = History::new();
    h.append(0, Kind::Ok, 1, 1)
        .append(0, Kind::Info, 1, 2)
        // Process 1 saw it, so the relay had it on disk.
        .read_list(1, 1, &[1, 2])
        .invoke(1, Op::Append { key: 1, element: 3 })
        .all_final(&[2, 3], &[1])
        .read_list(2, 1, &[1])
        .read_list(3, 1, &[1]);
    let report = check_lists(&h.events);
    assert_found(&report, AnomalyKind::LostWrite);
    assert_eq!(report.count(AnomalyKind::Divergence), 0);
}

#[test]
fn an_append_of_unknown_outcome_a_later_flush_acknowledged_must_not_be_lost() {
    // Process 0's append timed out; its next flush succeeded, so the
    // relay has it: the final reads lack it.
    let mut h = History::new();
    h.append(0, Kind::Info, 1, 1)
        .append(0, Kind::Ok, 1, 2)
        .settle(0, &[1], &[])
        .all_final(&[0, 1], &[1])
        .read_list(0, 1, &[2])
        .read_list(1, 1, &[2]);
    let report = check_lists(&h.events);
    assert_found(&report, AnomalyKind::LostWrite);
    // Unsettled, it may have been dropped.
    let mut h = History::new();
    h.append(0, Kind::Info, 1, 1)
        .append(0, Kind::Ok, 1, 2)
        .all_final(&[0, 1], &[1])
        .read_list(0, 1, &[2])
        .read_list(1, 1, &[2]);
    assert_valid(&check_lists(&h.events));
    // Settled and there.
    let mut h = History::new();
    h.append(0, Kind::Info, 1, 1)
        .append(0, Kind::Ok, 1, 2)
        .settle(0, &[1], &[])
        .all_final(&[0, 1], &[1])
        .read_list(0, 1, &[1, 2])
        .read_list(1, 1, &[1, 2]);
    let report = check_lists(&h.events);
    assert_valid(&report);
    assert_eq!(report.ops.ok, 4);
}

#[test]
fn an_append_a_later_flush_reported_lost_is_seen_only_by_its_writer_before() {
    // Its own replica showed it until the loss was known.
    let mut h = History::new();
    h.append(0, Kind::Info, 1, 1)
        .read_list(0, 1, &[1])
        .append(0, Kind::Fail, 1, 2)
        .settle(0, &[], &[1])
        .all_final(&[0, 1], &[1])
        .read_list(0, 1, &[])
        .read_list(1, 1, &[]);
    let report = check_lists(&h.events);
    assert_valid(&report);
    assert_eq!(report.ops.fail, 2);
    // Another process saw it: the relay had it after all.
    let mut h = History::new();
    h.append(0, Kind::Info, 1, 1)
        .read_list(1, 1, &[1])
        .append(0, Kind::Fail, 1, 2)
        .settle(0, &[], &[1]);
    assert_found(&check_lists(&h.events), AnomalyKind::FailedWriteVisible);
}

/// Process 0's append of 7 times out, its own replica shows it, and a
/// later flush reports it lost; process 1 reads the list at 130, whole,
/// and at the end.
const LOST_APPEND_SEEN: &str = r#"
{"process":0,"kind":"invoke","op":{"f":"append","key":1,"element":7},"time":100}
{"process":0,"kind":"info","op":{"f":"append","key":1,"element":7},"time":110}
{"process":0,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":120}
{"process":0,"kind":"ok","op":{"f":"read_list","key":1,"elements":[7]},"time":125}
{"process":0,"kind":"ok","op":{"f":"settle","lost":[7]},"time":200}
{"process":1,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":130}
{"process":1,"kind":"ok","op":{"f":"read_list","key":1,"elements":[7]},"time":135}
{"process":1,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":300}
{"process":1,"kind":"ok","op":{"f":"read_list","key":1,"elements":[7]},"time":305}
"#;

#[test]
fn a_failed_append_is_visible_to_another_process_whoever_read_the_list_before() {
    // Process 1 reads after process 0 or before it: either way it saw an
    // append the relay never had.
    for first_read in ["130", "115"] {
        let lines = LOST_APPEND_SEEN.replace(r#""time":130"#, &format!(r#""time":{first_read}"#));
        let report = check_lists(&recorded(&lines));
        assert_found(&report, AnomalyKind::FailedWriteVisible);
        assert_eq!(
            report.count(AnomalyKind::FailedWriteVisible),
            2,
            "{first_read}"
        );
    }
}

#[test]
fn an_element_that_is_no_integer_is_a_phantom() {
    let read = r#"
{"process":0,"kind":"invoke","op":{"f":"append","key":1,"element":7},"time":10}
{"process":0,"kind":"ok","op":{"f":"append","key":1,"element":7},"time":20}
{"process":1,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":30}
{"process":1,"kind":"ok","op":{"f":"read_list","key":1,"elements":[7],"foreign":["1.5"]},"time":40}
"#;
    let report = check_lists(&recorded(read));
    assert_found(&report, AnomalyKind::PhantomRead);
    assert_eq!(report.count(AnomalyKind::PhantomRead), 1);
}
