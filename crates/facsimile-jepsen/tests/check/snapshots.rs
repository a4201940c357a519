use facsimile_jepsen::check::check_snapshots;

fn named(list: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    list.iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect()
}

#[test]
fn identical_snapshots_converge() {
    let report = check_snapshots(&named(&[("a", b"xyz"), ("b", b"xyz"), ("c", b"xyz")]));
    assert!(report.identical);
    assert!(report.odd_ones_out.is_empty());
    assert_eq!(report.groups, vec![vec!["a", "b", "c"]]);
}

#[test]
fn the_replicas_outside_the_largest_group_are_named() {
    let report = check_snapshots(&named(&[
        ("a", b"old"),
        ("b", b"new"),
        ("c", b"new"),
        ("d", b"newer"),
    ]));
    assert!(!report.identical);
    assert_eq!(report.odd_ones_out, ["a", "d"]);
    assert_eq!(report.groups[0], ["b", "c"]);
    assert_eq!(report.groups.len(), 3);
}

#[test]
fn no_snapshot_or_one_is_trivially_identical() {
    assert!(check_snapshots(&[]).identical);
    assert!(check_snapshots(&named(&[("a", b"")])).identical);
}
