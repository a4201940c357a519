use std::fs;
use std::path::PathBuf;

use facsimile_jepsen::check::{AnomalyKind, CheckError, check_all, check_files, check_run};
use facsimile_jepsen::history::{Event, Kind, Missing, Op, Recorder};
use facsimile_jepsen::run;

use super::{History, assert_found, assert_valid, read, read_list, recorded};

/// A fresh directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("facsimile-jepsen-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes process 1's history to `path`: its final marker, then its final
/// reads of register 1 (empty) and of list 1 (`elements`).
fn final_reads(path: &std::path::Path, elements: &[u64]) {
    let mut reader = Recorder::new(fs::File::create(path).unwrap(), 1);
    reader.record_final(vec![1], vec![1], vec![]).unwrap();
    let register = read(1, None);
    reader.record(Kind::Invoke, &register).unwrap();
    reader.record(Kind::Ok, &register).unwrap();
    reader.record(Kind::Invoke, &read_list(1, None)).unwrap();
    reader
        .record(Kind::Ok, &read_list(1, Some(elements.to_vec())))
        .unwrap();
}

#[test]
fn history_files_of_several_processes_are_merged_and_checked() {
    let dir = scratch("files");
    let (a, b) = (dir.join("0.jsonl"), dir.join("1.jsonl"));
    let mut writer = Recorder::new(fs::File::create(&a).unwrap(), 0);
    let append = Op::Append { key: 1, element: 7 };
    writer.record(Kind::Invoke, &append).unwrap();
    writer.record(Kind::Ok, &append).unwrap();
    drop(writer);
    final_reads(&b, &[7]);
    let report = check_files([&a, &b]).unwrap();
    assert!(report.valid(), "{report}");
    assert_eq!(report.lists.ops.ok, 2);
    assert_eq!(report.lists.final_reads, 1);

    // The reader, had it seen nothing, lost the acknowledged append.
    final_reads(&b, &[]);
    let report = check_files([&a, &b]).unwrap();
    assert_eq!(report.lists.count(AnomalyKind::LostWrite), 1);

    assert!(matches!(
        check_files([dir.join("missing.jsonl")]),
        Err(CheckError::Open { .. })
    ));
    fs::write(&b, "not an event\n{}\n").unwrap();
    assert!(matches!(
        check_files([&a, &b]),
        Err(CheckError::Read { .. })
    ));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_summary_is_a_table_with_each_kind_found() {
    let mut h = History::new();
    h.append(0, Kind::Ok, 1, 1)
        .read_list(1, 1, &[1, 1])
        .write(0, Kind::Fail, 2, 9)
        .read(1, 2, Some(9));
    let report = check_all(&h.events);
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("checker"), "{text}");
    let row = |name: &str| -> Vec<String> {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name}: {text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        row("lists"),
        ["lists", "2", "2", "0", "0", "0", "1", "INVALID"]
    );
    assert_eq!(
        row("registers"),
        ["registers", "2", "1", "1", "0", "0", "1", "INVALID"]
    );
    assert_eq!(
        row("locks"),
        ["locks", "0", "0", "0", "0", "0", "0", "valid"]
    );
    assert!(text.contains("lists: duplicate-element x1"), "{text}");
    assert!(
        text.contains("registers: failed-write-visible x1"),
        "{text}"
    );
    assert!(text.ends_with("verdict: INVALID"), "{text}");

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["lists"]["anomalies"]["duplicate-element"], 1);
    assert_eq!(json["lists"]["examples"][0]["ops"][0]["invoke_index"], 2);
}

#[test]
fn malformed_events_make_the_history_invalid() {
    let ev = Event::new;
    let history = vec![
        ev(0, Kind::Ok, Op::Write { key: 1, value: 1 }, 1),
        ev(1, Kind::Invoke, Op::Write { key: 1, value: 2 }, 2),
        ev(1, Kind::Ok, Op::Append { key: 1, element: 2 }, 3),
    ];
    let report = check_all(&history);
    assert!(!report.valid());
    assert_eq!(report.history.count(AnomalyKind::Malformed), 2);
    // The write left open counts as one of unknown outcome.
    assert_eq!(report.registers.ops.info, 1);
}

#[test]
fn checking_a_directory_without_histories_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("summary.json"), "{}").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facsimile-jepsen"))
        .arg("check")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no history-*.jsonl"),
        "{out:?}"
    );
}

/// Process 0 appends 7 to list 1 and writes 9 to register 1; at the end,
/// process 0's document lacks both, and process 1 has no document.
const OBJECTS_GONE_AT_THE_END: &str = r#"
{"process":0,"kind":"invoke","op":{"f":"append","key":1,"element":7},"time":100}
{"process":0,"kind":"ok","op":{"f":"append","key":1,"element":7},"time":110}
{"process":0,"kind":"invoke","op":{"f":"write","key":1,"value":9},"time":120}
{"process":0,"kind":"ok","op":{"f":"write","key":1,"value":9},"time":130}
{"process":1,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":140}
{"process":1,"kind":"ok","op":{"f":"read_list","key":1,"elements":[7]},"time":141}
{"process":0,"kind":"ok","op":{"f":"final","live":[0,1],"keys":[1]},"time":299}
{"process":0,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":300}
{"process":0,"kind":"ok","op":{"f":"read_list","key":1,"elements":null,"missing":"object"},"time":301}
{"process":0,"kind":"invoke","op":{"f":"read","key":1,"value":null},"time":302}
{"process":0,"kind":"ok","op":{"f":"read","key":1,"value":null,"missing":"object"},"time":303}
{"process":1,"kind":"ok","op":{"f":"final","live":[0,1],"keys":[1]},"time":309}
{"process":1,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":310}
{"process":1,"kind":"ok","op":{"f":"read_list","key":1,"elements":null,"missing":"document"},"time":311}
{"process":1,"kind":"invoke","op":{"f":"read","key":1,"value":null},"time":312}
{"process":1,"kind":"ok","op":{"f":"read","key":1,"value":null,"missing":"document"},"time":313}
"#;

#[test]
fn final_reads_must_find_their_objects_and_every_live_process_must_make_them() {
    let report = check_all(&recorded(OBJECTS_GONE_AT_THE_END));
    for checker in [&report.registers, &report.lists] {
        assert_found(checker, AnomalyKind::MissingObject);
        assert_eq!(checker.count(AnomalyKind::MissingObject), 2, "{report}");
        assert_eq!(checker.count(AnomalyKind::MissingFinalRead), 0, "{report}");
        assert_eq!(checker.final_reads, 0, "{report}");
    }
    // Process 1 never got to its final reads, which process 0's marker
    // says it must make.
    let lines: String = OBJECTS_GONE_AT_THE_END
        .lines()
        .filter(|l| !(l.contains(r#""process":1"#) && l.contains(r#""time":3"#)))
        .map(|l| format!("{l}\n"))
        .collect();
    let report = check_all(&recorded(&lines));
    for checker in [&report.registers, &report.lists] {
        assert_found(checker, AnomalyKind::MissingFinalRead);
        assert_eq!(checker.count(AnomalyKind::MissingFinalRead), 1, "{report}");
    }
    // Before its final reads a node may have no document (it is joining
    // or starting over): it observed nothing. A document without the
    // object is wrong at any time.
    let mut h = History::new();
    let missing = |missing| Op::ReadList {
        key: 1,
        elements: None,
        missing: Some(missing),
        foreign: Vec::new(),
    };
    h.append(0, Kind::Ok, 1, 7)
        .read_list(1, 1, &[7])
        .op(1, Kind::Ok, read_list(1, None), missing(Missing::Document))
        .read_list(1, 1, &[7]);
    assert_valid(&check_all(&h.events).lists);
    h.op(1, Kind::Ok, read_list(1, None), missing(Missing::Object));
    assert_found(&check_all(&h.events).lists, AnomalyKind::MissingObject);
}

/// As the clients recorded before they marked their final reads: reads
/// that found no list or register map were recorded as failed.
const NO_FINAL_MARKER: &str = r#"
{"process":0,"kind":"invoke","op":{"f":"append","key":1,"element":7},"time":100}
{"process":0,"kind":"ok","op":{"f":"append","key":1,"element":7},"time":110}
{"process":0,"kind":"invoke","op":{"f":"write","key":2,"value":9},"time":120}
{"process":0,"kind":"ok","op":{"f":"write","key":2,"value":9},"time":130}
{"process":0,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":300}
{"process":0,"kind":"fail","op":{"f":"read_list","key":1,"elements":null},"time":301}
{"process":0,"kind":"invoke","op":{"f":"read","key":2,"value":null},"time":302}
{"process":0,"kind":"fail","op":{"f":"read","key":2,"value":null},"time":303}
{"process":1,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":140}
{"process":1,"kind":"ok","op":{"f":"read_list","key":1,"elements":[7]},"time":141}
{"process":1,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":310}
{"process":1,"kind":"fail","op":{"f":"read_list","key":1,"elements":null},"time":311}
{"process":1,"kind":"invoke","op":{"f":"read","key":2,"value":null},"time":312}
{"process":1,"kind":"fail","op":{"f":"read","key":2,"value":null},"time":313}
"#;

#[test]
fn a_history_without_final_reads_or_acknowledged_operations_is_unchecked() {
    let report = check_run(&recorded(NO_FINAL_MARKER), &[]);
    assert!(report.violation_free(), "{report}");
    assert!(!report.valid(), "{report}");
    assert_eq!(report.unchecked(), ["no final read"]);
    assert!(
        report
            .to_string()
            .ends_with("verdict: UNCHECKED (no final read)"),
        "{report}"
    );
    let report = check_run(&[], &[]);
    assert!(!report.valid(), "{report}");
    assert_eq!(
        report.unchecked(),
        ["no acknowledged operation", "no final read"]
    );
}

#[test]
fn checking_an_empty_run_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("history-0.jsonl"), "").unwrap();
    std::fs::write(dir.path().join("faults.jsonl"), "").unwrap();
    let (passed, text) = check_dir(dir.path());
    assert!(!passed, "{text}");
    assert!(text.contains("UNCHECKED"), "{text}");
}

/// Two holders of lock 1 at once, process 1 granted while process 0
/// held it, each incrementing counter 1 once.
const TWO_HOLDERS: &str = r#"
{"process":0,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":100}
{"process":0,"kind":"ok","op":{"f":"acquire","lock":1,"token":1},"time":110}
{"process":0,"kind":"invoke","op":{"f":"increment","counter":1,"token":1,"read":null,"wrote":null},"time":120}
{"process":0,"kind":"ok","op":{"f":"increment","counter":1,"token":1,"read":0,"wrote":1},"time":130}
{"process":1,"kind":"invoke","op":{"f":"acquire","lock":1,"token":null},"time":200}
{"process":1,"kind":"ok","op":{"f":"acquire","lock":1,"token":2},"time":210}
{"process":1,"kind":"invoke","op":{"f":"increment","counter":1,"token":2,"read":null,"wrote":null},"time":220}
{"process":1,"kind":"ok","op":{"f":"increment","counter":1,"token":2,"read":1,"wrote":2},"time":230}
{"process":1,"kind":"invoke","op":{"f":"release","lock":1,"token":2},"time":300}
{"process":1,"kind":"ok","op":{"f":"release","lock":1,"token":2},"time":310}
{"process":0,"kind":"invoke","op":{"f":"release","lock":1,"token":1},"time":400}
{"process":0,"kind":"ok","op":{"f":"release","lock":1,"token":1},"time":410}
{"process":0,"kind":"ok","op":{"f":"final","live":[0,1],"keys":[1]},"time":500}
{"process":0,"kind":"invoke","op":{"f":"read","key":1,"value":null},"time":510}
{"process":0,"kind":"ok","op":{"f":"read","key":1,"value":null},"time":511}
{"process":0,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":512}
{"process":0,"kind":"ok","op":{"f":"read_list","key":1,"elements":[]},"time":513}
{"process":1,"kind":"ok","op":{"f":"final","live":[0,1],"keys":[1]},"time":520}
{"process":1,"kind":"invoke","op":{"f":"read","key":1,"value":null},"time":530}
{"process":1,"kind":"ok","op":{"f":"read","key":1,"value":null},"time":531}
{"process":1,"kind":"invoke","op":{"f":"read_list","key":1,"elements":null},"time":532}
{"process":1,"kind":"ok","op":{"f":"read_list","key":1,"elements":[]},"time":533}
"#;

/// A run's directory holding `TWO_HOLDERS`, one history file per process.
fn run_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for p in 0..2 {
        let lines: String = TWO_HOLDERS
            .lines()
            .filter(|l| l.contains(&format!(r#""process":{p},"#)))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(dir.path().join(format!("history-{p}.jsonl")), lines).unwrap();
    }
    dir
}

fn check_dir(dir: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facsimile-jepsen"))
        .arg("check")
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), text)
}

#[test]
fn checking_a_run_without_its_fault_record_leaves_the_locks_unchecked() {
    let dir = run_dir();
    let (passed, text) = check_dir(dir.path());
    assert!(!passed, "{text}");
    assert!(text.contains("locks: UNCHECKED (no fault record"), "{text}");
    // With the record (no fault at all), the overlap is a violation.
    fs::write(dir.path().join("faults.jsonl"), "").unwrap();
    let (passed, text) = check_dir(dir.path());
    assert!(!passed, "{text}");
    assert!(text.contains("locks: concurrent-holders x1"), "{text}");
}

#[test]
fn checking_a_run_again_covers_its_snapshots_errors_and_shortfalls() {
    let dir = run_dir();
    let path = dir.path();
    // Without the overlap: process 0 releases before process 1 asks.
    for p in 0..2 {
        let file = path.join(format!("history-{p}.jsonl"));
        let text = fs::read_to_string(&file)
            .unwrap()
            .replace(r#""time":400"#, r#""time":150"#)
            .replace(r#""time":410"#, r#""time":160"#);
        fs::write(&file, text).unwrap();
    }
    fs::write(path.join("faults.jsonl"), "").unwrap();
    let histories: Vec<PathBuf> = (0..2)
        .map(|p| path.join(format!("history-{p}.jsonl")))
        .collect();
    let faults = path.join("faults.jsonl");
    let recheck = || run::recheck(&histories, Some(&faults), Some(path)).unwrap();
    let summary = |errors: &str, duration: u64| {
        let json = format!(
            r#"{{"config": {{"backend": "relay", "workload": "locks", "clients": 2, "seed": 1,
                "duration": {duration}, "out": "{}", "proxies": false, "disk_stalls": false,
                "disk_slow": false, "nats_sync_always": false}},
              "schedule": [], "errors": [{errors}], "valid": true}}"#,
            path.display()
        );
        fs::write(path.join("summary.json"), json).unwrap();
    };
    // Neither snapshots nor a summary: unchecked.
    let r = recheck();
    assert!(!r.valid, "{}", r.text);
    assert!(r.text.contains("snapshots: process 0's"), "{}", r.text);
    assert!(r.text.contains("run: UNCHECKED (no readable"), "{}", r.text);
    fs::write(path.join("snapshot-0.bin"), b"same").unwrap();
    fs::write(path.join("snapshot-1.bin"), b"same").unwrap();
    summary("", 2);
    let r = recheck();
    assert!(r.valid, "{}", r.text);
    assert!(r.text.contains("snapshots: 2 identical"), "{}", r.text);
    // What the run recorded as wrong stays wrong; a run of 3 s needs 3
    // grants.
    summary(r#""process 1 did not say `done`""#, 3);
    let r = recheck();
    assert!(!r.valid, "{}", r.text);
    assert!(
        r.text
            .contains("error (as the run recorded it): process 1 did not say `done`"),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("too little: 2 acquire(s) acknowledged, fewer than 3"),
        "{}",
        r.text
    );
    summary("", 2);
    fs::write(path.join("snapshot-1.bin"), b"other").unwrap();
    let r = recheck();
    assert!(!r.valid, "{}", r.text);
    assert!(r.text.contains("snapshots: DIFFER"), "{}", r.text);
}
