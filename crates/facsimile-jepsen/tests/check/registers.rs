use facsimile_jepsen::check::{AnomalyKind, check_registers};
use facsimile_jepsen::history::{Kind, Op};

use super::{History, assert_found, assert_valid, recorded};

#[test]
fn concurrent_unknown_and_crashed_writes_are_no_anomaly() {
    let mut h = History::new();
    h.read(0, 1, None)
        .invoke(0, Op::Write { key: 1, value: 1 })
        .invoke(1, Op::Write { key: 1, value: 2 })
        .end(0, Kind::Ok, Op::Write { key: 1, value: 1 })
        .end(1, Kind::Ok, Op::Write { key: 1, value: 2 })
        // The concurrent write with the higher stamp wins everywhere.
        .read(0, 1, Some(2))
        .read(1, 1, Some(2))
        // A process killed mid-run: its last read is not a final one.
        .read(4, 1, Some(1))
        // A write of unknown outcome, read locally, then dropped when its
        // process rejoined with the relay's copy.
        .write(2, Kind::Info, 1, 3)
        .read(2, 1, Some(3))
        .read(2, 1, Some(2))
        // A write the storage refused, and one a crash cut short.
        .write(0, Kind::Fail, 1, 5)
        .invoke(3, Op::Write { key: 1, value: 4 })
        .all_final(&[0, 1, 2], &[1])
        .read(0, 1, Some(2))
        .read(1, 1, Some(2))
        .read(2, 1, Some(2));
    let report = check_registers(&h.events);
    assert_valid(&report);
    assert_eq!(report.final_reads, 3);
    assert_eq!(
        (report.ops.ok, report.ops.fail, report.ops.info),
        (11, 1, 2)
    );
}

#[test]
fn a_value_nobody_wrote_is_a_phantom() {
    let mut h = History::new();
    h.write(0, Kind::Ok, 1, 1).read(1, 1, Some(99));
    assert_found(&check_registers(&h.events), AnomalyKind::PhantomRead);
    // Another key's value is no excuse.
    let mut h = History::new();
    h.write(0, Kind::Ok, 2, 7).read(1, 1, Some(7));
    assert_found(&check_registers(&h.events), AnomalyKind::PhantomRead);
}

#[test]
fn a_failed_write_must_stay_invisible() {
    let mut h = History::new();
    h.write(0, Kind::Fail, 1, 5).read(1, 1, Some(5));
    assert_found(&check_registers(&h.events), AnomalyKind::FailedWriteVisible);
}

#[test]
fn a_process_reads_its_acknowledged_writes() {
    let mut h = History::new();
    h.write(0, Kind::Ok, 1, 1)
        .write(0, Kind::Ok, 1, 2)
        .read(0, 1, Some(1));
    assert_found(&check_registers(&h.events), AnomalyKind::ReadYourWrites);
    let mut h = History::new();
    h.write(0, Kind::Ok, 1, 1).read(0, 1, None);
    assert_found(&check_registers(&h.events), AnomalyKind::ReadYourWrites);
}

#[test]
fn reads_never_go_back_in_stamp_order() {
    // One process sees 1, 2, then 1 again.
    let mut h = History::new();
    h.write(1, Kind::Ok, 1, 1)
        .write(1, Kind::Ok, 1, 2)
        .read(0, 1, Some(1))
        .read(0, 1, Some(2))
        .read(0, 1, Some(1));
    assert_found(&check_registers(&h.events), AnomalyKind::NonMonotonicRead);
    // Two processes see two values in opposite orders.
    let mut h = History::new();
    h.write(2, Kind::Ok, 1, 1)
        .write(3, Kind::Ok, 1, 2)
        .read(0, 1, Some(1))
        .read(0, 1, Some(2))
        .read(1, 1, Some(2))
        .read(1, 1, Some(1));
    assert_found(&check_registers(&h.events), AnomalyKind::NonMonotonicRead);
    // A value, then nothing.
    let mut h = History::new();
    h.write(1, Kind::Ok, 1, 1)
        .read(0, 1, Some(1))
        .read(0, 1, None);
    assert_found(&check_registers(&h.events), AnomalyKind::NonMonotonicRead);
}

#[test]
fn an_acknowledged_write_below_the_final_value_is_lost() {
    // Process 0's writes go up in stamp order; the replicas end on the
    // older one.
    let mut h = History::new();
    h.write(0, Kind::Ok, 1, 1)
        .write(0, Kind::Ok, 1, 2)
        .all_final(&[1, 2], &[1])
        .read(1, 1, Some(1))
        .read(2, 1, Some(1));
    let report = check_registers(&h.events);
    assert_found(&report, AnomalyKind::LostWrite);
    assert_eq!(report.final_reads, 2);
    // Nothing at all at the end.
    let mut h = History::new();
    h.write(0, Kind::Ok, 1, 1)
        .all_final(&[1], &[1])
        .read(1, 1, None);
    assert_found(&check_registers(&h.events), AnomalyKind::LostWrite);
}

#[test]
fn an_unacknowledged_write_may_be_lost() {
    let mut h = History::new();
    h.write(0, Kind::Ok, 1, 1)
        .write(0, Kind::Info, 1, 2)
        .all_final(&[1, 2], &[1])
        .read(1, 1, Some(1))
        .read(2, 1, Some(1));
    let report = check_registers(&h.events);
    assert_valid(&report);
    assert_eq!(report.final_reads, 2);
}

#[test]
fn final_reads_must_agree() {
    let mut h = History::new();
    h.write(0, Kind::Ok, 1, 1)
        .write(1, Kind::Ok, 1, 2)
        .all_final(&[0, 1], &[1])
        .read(0, 1, Some(1))
        .read(1, 1, Some(2));
    assert_found(&check_registers(&h.events), AnomalyKind::Divergence);
}

#[test]
fn a_write_of_unknown_outcome_seen_by_another_process_is_durable() {
    let mut h = History::new();
    h.write(1, Kind::Ok, 1, 1)
        .write(0, Kind::Info, 1, 2)
        // Process 2 saw 2 replace 1: the relay had 2 on disk.
        .read(2, 1, Some(1))
        .read(2, 1, Some(2))
        .invoke(2, Op::Write { key: 1, value: 3 })
        .all_final(&[3, 4], &[1])
        .read(3, 1, Some(1))
        .read(4, 1, Some(1));
    assert_found(&check_registers(&h.events), AnomalyKind::LostWrite);
}

#[test]
fn a_write_of_unknown_outcome_a_later_flush_acknowledged_must_not_be_lost() {
    let mut h = History::new();
    h.write(0, Kind::Info, 1, 1)
        .write(0, Kind::Ok, 2, 2)
        .settle(0, &[1], &[])
        .all_final(&[1], &[1, 2])
        .read(1, 1, None)
        .read(1, 2, Some(2));
    assert_found(&check_registers(&h.events), AnomalyKind::LostWrite);
    // Unsettled, it may have been dropped.
    let mut h = History::new();
    h.write(0, Kind::Info, 1, 1)
        .write(0, Kind::Ok, 2, 2)
        .all_final(&[1], &[1, 2])
        .read(1, 1, None)
        .read(1, 2, Some(2));
    assert_valid(&check_registers(&h.events));
    // Settled as lost, it was shown by its own replica only.
    let mut h = History::new();
    h.write(0, Kind::Info, 1, 1)
        .read(0, 1, Some(1))
        .settle(0, &[], &[1])
        .all_final(&[0, 1], &[1])
        .read(0, 1, None)
        .read(1, 1, None);
    assert_valid(&check_registers(&h.events));
    let mut h = History::new();
    h.write(0, Kind::Info, 1, 1)
        .settle(0, &[], &[1])
        .read(1, 1, Some(1));
    assert_found(&check_registers(&h.events), AnomalyKind::FailedWriteVisible);
}

#[test]
fn a_value_that_is_no_integer_is_a_phantom() {
    // Process 1 read a string where process 0 wrote 7: no write wrote it.
    let read = r#"
{"process":0,"kind":"invoke","op":{"f":"write","key":1,"value":7},"time":10}
{"process":0,"kind":"ok","op":{"f":"write","key":1,"value":7},"time":20}
{"process":1,"kind":"invoke","op":{"f":"read","key":1,"value":null},"time":30}
{"process":1,"kind":"ok","op":{"f":"read","key":1,"value":null,"foreign":"\"x\""},"time":40}
"#;
    let report = check_registers(&recorded(read));
    assert_found(&report, AnomalyKind::PhantomRead);
    assert_eq!(report.count(AnomalyKind::ReadYourWrites), 0);
}
