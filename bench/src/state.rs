//! Reading a replica's state back: totals for the read benchmarks and a
//! canonical JSON export for checking that replicas converged.

use std::fmt::Debug;

use serde_json::{Map, Value as Json};

use crate::system::{Root, System, Visit};

/// Counts and sums everything in a container, touching every value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Maps seen, the walked root included if it is a map.
    pub maps: u64,
    /// Arrays seen, the walked root included if it is an array.
    pub arrays: u64,
    /// Integers seen.
    pub ints: u64,
    /// The sum of the integers seen.
    pub int_sum: i64,
    /// Strings seen.
    pub strs: u64,
    /// The total length in bytes of the strings seen.
    pub str_bytes: u64,
    /// Values of any other type seen.
    pub others: u64,
}

impl Totals {
    /// Walks the root container `root` of `system`.
    pub fn of<S: System>(system: &S, root: Root) -> Self {
        let mut totals = Self::default();
        system.walk(root, &mut totals);
        totals
    }
}

impl Visit for Totals {
    fn enter_map(&mut self) {
        self.maps += 1;
    }

    fn key(&mut self, _key: &str) {}

    fn leave_map(&mut self) {}

    fn enter_array(&mut self) {
        self.arrays += 1;
    }

    fn leave_array(&mut self) {}

    fn int(&mut self, value: i64) {
        self.ints += 1;
        self.int_sum = self.int_sum.wrapping_add(value);
    }

    fn str(&mut self, value: &str) {
        self.strs += 1;
        self.str_bytes += value.len() as u64;
    }

    fn other(&mut self, _value: &dyn Debug) {
        self.others += 1;
    }
}

/// The whole document as JSON with sorted keys: two replicas have converged
/// exactly when their canonical exports are equal.
pub fn canonical_json<S: System>(system: &S) -> Json {
    let mut roots = Map::new();
    for root in Root::ALL {
        let mut builder = JsonBuilder::default();
        system.walk(root, &mut builder);
        roots.insert(root.name().to_owned(), builder.finish());
    }
    Json::Object(roots)
}

/// Builds a JSON value from a walk. `serde_json::Map` keeps keys sorted, so
/// the order a library iterates a map in does not matter.
#[derive(Default)]
struct JsonBuilder {
    /// The containers being built, innermost last, each with the key its
    /// next entry goes under when it is a map.
    stack: Vec<(Json, Option<String>)>,
    done: Option<Json>,
}

impl JsonBuilder {
    fn push_value(&mut self, value: Json) {
        match self.stack.last_mut() {
            Some((Json::Object(map), key)) => {
                let key = key.take().expect("a map entry without a key");
                map.insert(key, value);
            }
            Some((Json::Array(array), _)) => array.push(value),
            Some(_) => unreachable!("only maps and arrays are pushed"),
            None => self.done = Some(value),
        }
    }

    fn finish(self) -> Json {
        assert!(self.stack.is_empty(), "unbalanced walk");
        self.done.unwrap_or(Json::Null)
    }
}

impl Visit for JsonBuilder {
    fn enter_map(&mut self) {
        self.stack.push((Json::Object(Map::new()), None));
    }

    fn key(&mut self, key: &str) {
        if let Some((_, slot)) = self.stack.last_mut() {
            *slot = Some(key.to_owned());
        }
    }

    fn leave_map(&mut self) {
        let (map, _) = self.stack.pop().expect("unbalanced walk");
        self.push_value(map);
    }

    fn enter_array(&mut self) {
        self.stack.push((Json::Array(Vec::new()), None));
    }

    fn leave_array(&mut self) {
        let (array, _) = self.stack.pop().expect("unbalanced walk");
        self.push_value(array);
    }

    fn int(&mut self, value: i64) {
        self.push_value(Json::from(value));
    }

    fn str(&mut self, value: &str) {
        self.push_value(Json::from(value));
    }

    fn other(&mut self, value: &dyn Debug) {
        self.push_value(Json::from(format!("<other {value:?}>")));
    }
}
