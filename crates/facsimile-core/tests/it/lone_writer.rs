//! A lone writer's array methods give exactly what the same operations give
//! on a `Vec`, and the other replicas end identical.

use facsimile_core::sim::{Sim, run_seeds};
use facsimile_core::{Input, Value};
use rand::Rng;

fn ints(values: Vec<Value>) -> Vec<i64> {
    values
        .into_iter()
        .map(|v| match v {
            Value::Int(i) => i,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn array_methods_match_vec() {
    run_seeds(0..300, |seed| {
        let mut sim = Sim::new(seed, 3);
        let list = sim
            .with(0, |r| r.set_root(Input::Array(vec![])))
            .unwrap()
            .unwrap();
        let mut model: Vec<i64> = Vec::new();
        let mut next = 0i64;
        for _ in 0..120 {
            let mut rng = sim.rng().clone();
            let len = model.len();
            let r = sim.replica(0);
            match rng.random_range(0..12) {
                0 => {
                    // push
                    next += 1;
                    model.push(next);
                    r.list_splice(list, len, 0, vec![next.into()]).unwrap();
                }
                1 => {
                    // pop
                    let got = r
                        .list_splice(list, len.saturating_sub(1), 1, vec![])
                        .unwrap();
                    assert_eq!(ints(got), model.pop().into_iter().collect::<Vec<_>>());
                }
                2 => {
                    // shift
                    let got = r.list_splice(list, 0, 1, vec![]).unwrap();
                    let want: Vec<i64> = if model.is_empty() {
                        vec![]
                    } else {
                        vec![model.remove(0)]
                    };
                    assert_eq!(ints(got), want);
                }
                3 => {
                    // unshift several
                    let items: Vec<i64> = (0..rng.random_range(1..4))
                        .map(|_| {
                            next += 1;
                            next
                        })
                        .collect();
                    model.splice(0..0, items.iter().copied());
                    r.list_splice(list, 0, 0, items.into_iter().map(Input::from))
                        .unwrap();
                }
                4 => {
                    // splice
                    let start = rng.random_range(0..=len);
                    let del = rng.random_range(0..=len - start);
                    let items: Vec<i64> = (0..rng.random_range(0..4))
                        .map(|_| {
                            next += 1;
                            next
                        })
                        .collect();
                    let want: Vec<i64> = model
                        .splice(start..start + del, items.iter().copied())
                        .collect();
                    let got = r
                        .list_splice(list, start, del, items.into_iter().map(Input::from))
                        .unwrap();
                    assert_eq!(ints(got), want);
                }
                5 => {
                    r.list_reorder(list, &(0..len).rev().collect::<Vec<_>>())
                        .unwrap();
                    model.reverse();
                }
                6 => {
                    // sort by a comparator (descending by value mod 7, stable)
                    let mut order: Vec<usize> = (0..len).collect();
                    order.sort_by_key(|&i| std::cmp::Reverse(model[i] % 7));
                    r.list_reorder(list, &order).unwrap();
                    model.sort_by_key(|&v| std::cmp::Reverse(v % 7));
                }
                7 if len > 0 => {
                    // fill
                    let a = rng.random_range(0..len);
                    let b = rng.random_range(a..=len);
                    next += 1;
                    let v = next;
                    r.list_set_many(list, (a..b).map(|i| (i, Input::from(v))).collect())
                        .unwrap();
                    model[a..b].fill(v);
                }
                8 if len > 0 => {
                    // copy_within
                    let s = rng.random_range(0..len);
                    let e = rng.random_range(s..=len);
                    let t = rng.random_range(0..len);
                    let n = (e - s).min(len - t);
                    let src: Vec<i64> = model[s..s + n].to_vec();
                    r.list_set_many(list, (0..n).map(|k| (t + k, Input::from(src[k]))).collect())
                        .unwrap();
                    model.copy_within(s..s + n, t);
                }
                9 => {
                    // index set, also past the end
                    let i = rng.random_range(0..=len + 1);
                    next += 1;
                    if i >= len {
                        model.resize(i, 0);
                        model.push(next);
                        let mut pad: Vec<Input> = (len..i).map(|_| Input::from(0i64)).collect();
                        pad.push(next.into());
                        r.list_splice(list, len, 0, pad).unwrap();
                    } else {
                        model[i] = next;
                        r.list_set(list, i, next.into()).unwrap();
                    }
                }
                10 => {
                    // truncate
                    let n = rng.random_range(0..=len);
                    model.truncate(n);
                    r.list_splice(list, n, len - n, vec![]).unwrap();
                }
                _ => {
                    // random permutation (sort by arbitrary comparator)
                    let mut order: Vec<usize> = (0..len).collect();
                    for k in (1..len).rev() {
                        order.swap(k, rng.random_range(0..=k));
                    }
                    let new: Vec<i64> = order.iter().map(|&i| model[i]).collect();
                    r.list_reorder(list, &order).unwrap();
                    model = new;
                }
            }
            *sim.rng() = rng;
            sim.collect(0);
            assert_eq!(
                ints(sim.replica(0).list_values(list).unwrap()),
                model,
                "seed {seed}"
            );
            let n = sim.rng().random_range(0..6);
            sim.steps(n);
        }
        sim.settle();
        sim.assert_converged();
        for i in 1..3 {
            let r = sim.replica(i);
            let l = r.root().as_ref_id().unwrap();
            assert_eq!(
                ints(r.list_values(l).unwrap()),
                model,
                "seed {seed}: replica {i}"
            );
        }
    });
}

/// An object created under a map that became unreachable is reclaimed too,
/// although nothing was detached after the mark that found the map.
#[test]
fn objects_created_under_a_detached_map_are_reclaimed() {
    use std::time::Duration;
    let mut sim = Sim::new(7, 2);
    let root = sim
        .with(0, |r| r.set_root(Input::Map(vec![])))
        .unwrap()
        .unwrap();
    sim.with(0, |r| r.map_set(root, "m", Input::Map(vec![])))
        .unwrap();
    sim.settle();
    let m = match sim.with(0, |r| r.map_get(root, "m")).unwrap() {
        Some(Value::Ref(m)) => m,
        other => panic!("a map, not {other:?}"),
    };
    sim.with(0, |r| r.map_set(root, "m", 1.into())).unwrap();
    // One pass finds the map unreachable and waits for the other replica.
    sim.advance(Duration::from_secs(1));
    let created = sim.with(0, |r| r.map_set(m, "x", Input::Map(vec![])));
    assert!(created.is_ok(), "{created:?}");
    sim.settle();
    sim.assert_converged();
    for i in sim.online() {
        let r = sim.replica(i);
        let reachable = r.reachable_objects().len();
        assert_eq!(
            r.object_count(),
            reachable,
            "replica {i} keeps unreachable objects"
        );
    }
}
