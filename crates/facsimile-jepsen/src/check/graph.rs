//! A precedence relation between the values (or elements) of one key, as
//! the history reveals it, with the operations that revealed each edge.

use std::collections::VecDeque;

use petgraph::algo::tarjan_scc;
use petgraph::graphmap::DiGraphMap;
use rustc_hash::{FxHashMap, FxHashSet};

/// `a` before `b` for each edge `(a, b)`, with the two operations (indices
/// into the checker's operations) that showed it.
#[derive(Default)]
pub(super) struct Precedence {
    edges: FxHashMap<(u64, u64), (usize, usize)>,
}

impl Precedence {
    /// Records that `a` precedes `b`, as shown by operations `shown_by`
    /// (the first showing of an edge is kept).
    pub(super) fn add(&mut self, a: u64, b: u64, shown_by: (usize, usize)) {
        self.edges.entry((a, b)).or_insert(shown_by);
    }

    /// The operations that showed the edge `(a, b)`.
    pub(super) fn shown_by(&self, a: u64, b: u64) -> (usize, usize) {
        self.edges[&(a, b)]
    }

    fn graph(&self) -> DiGraphMap<u64, ()> {
        DiGraphMap::from_edges(self.edges.keys().copied())
    }

    /// One cycle in each strongly connected part of the relation, as the
    /// nodes around it (the last one precedes the first).
    pub(super) fn cycles(&self) -> Vec<Vec<u64>> {
        let graph = self.graph();
        tarjan_scc(&graph)
            .into_iter()
            .filter(|scc| scc.len() > 1)
            .map(|scc| {
                let within: FxHashSet<u64> = scc.iter().copied().collect();
                let start = scc[0];
                path(&graph, start, |n| n == start, |n| within.contains(&n))
                    .expect("a strongly connected part of two or more nodes has a cycle")
            })
            .collect()
    }

    /// A path from `from` to a node (not `from` itself) satisfying
    /// `target`, as its nodes from `from` on.
    pub(super) fn path_to(&self, from: u64, target: impl Fn(u64) -> bool) -> Option<Vec<u64>> {
        if !self.edges.keys().any(|&(a, _)| a == from) {
            return None;
        }
        let graph = self.graph();
        path(&graph, from, |n| n != from && target(n), |_| true)
    }
}

/// Breadth-first from `from` along nodes allowed by `inside`, to the first
/// node satisfying `target` reached by at least one edge. Returns the nodes
/// from `from` up to but excluding that node when it is `from` itself (a
/// cycle), including it otherwise.
fn path(
    graph: &DiGraphMap<u64, ()>,
    from: u64,
    target: impl Fn(u64) -> bool,
    inside: impl Fn(u64) -> bool,
) -> Option<Vec<u64>> {
    let mut parent: FxHashMap<u64, u64> = FxHashMap::default();
    let mut queue = VecDeque::from([from]);
    while let Some(n) = queue.pop_front() {
        for m in graph.neighbors(n) {
            if !inside(m) {
                continue;
            }
            if target(m) {
                let mut nodes = vec![n];
                let mut at = n;
                while at != from {
                    at = parent[&at];
                    nodes.push(at);
                }
                nodes.reverse();
                if m != from {
                    nodes.push(m);
                }
                return Some(nodes);
            }
            if m != from && !parent.contains_key(&m) {
                parent.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_cycle_and_a_path() {
        let mut p = Precedence::default();
        for (a, b) in [(1, 2), (2, 3), (3, 1), (3, 4), (5, 6)] {
            p.add(a, b, (0, 0));
        }
        let cycles = p.cycles();
        assert_eq!(cycles.len(), 1);
        let mut c = cycles[0].clone();
        c.sort_unstable();
        assert_eq!(c, vec![1, 2, 3]);
        assert_eq!(p.path_to(1, |n| n == 4), Some(vec![1, 2, 3, 4]));
        assert_eq!(p.path_to(4, |n| n == 1), None);
        assert_eq!(p.path_to(5, |n| n == 1), None);
    }
}
