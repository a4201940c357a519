//! Convergence of the replicas' final snapshots, byte for byte.

use rustc_hash::FxHashMap;
use serde::Serialize;

/// Whether the replicas' snapshots are identical, and which are not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotReport {
    /// Every snapshot is byte-identical to every other.
    pub identical: bool,
    /// The replicas grouped by identical snapshot, largest group first
    /// (ties: the group whose first replica came first).
    pub groups: Vec<Vec<String>>,
    /// The replicas outside the largest group, in the order given.
    pub odd_ones_out: Vec<String>,
}

/// Compares the final snapshots of replicas, given as `(name, bytes)`.
///
/// ```
/// use facsimile_jepsen::check::check_snapshots;
///
/// let report = check_snapshots(&[
///     ("a".to_string(), vec![1, 2]),
///     ("b".to_string(), vec![1, 2]),
///     ("c".to_string(), vec![1, 3]),
/// ]);
/// assert!(!report.identical);
/// assert_eq!(report.odd_ones_out, ["c"]);
/// ```
pub fn check_snapshots(snapshots: &[(String, Vec<u8>)]) -> SnapshotReport {
    let mut index: FxHashMap<&[u8], usize> = FxHashMap::default();
    let mut groups: Vec<Vec<String>> = Vec::new();
    for (name, bytes) in snapshots {
        let g = *index.entry(bytes.as_slice()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(name.clone());
    }
    // Stable: among equal sizes the first seen stays first.
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
    let odd_ones_out = match groups.first() {
        Some(main) => snapshots
            .iter()
            .map(|(name, _)| name)
            .filter(|name| !main.contains(name))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    SnapshotReport {
        identical: groups.len() <= 1,
        groups,
        odd_ones_out,
    }
}
