//! The JSON notation `get` and `watch` write, read back by `set`.
//!
//! `get` writes each object once ([`facsimile::Value::to_json_with_refs`]):
//! where it appears again, `{"$ref": POINTER}` names the place where it
//! was written, and a stored key `$ref` is written `$$ref` (`$$ref` as
//! `$$$ref`, and so on), so that only a reference has that key. `set`
//! reads the same: what `get PATH` printed, given to `set PATH`, is the
//! same graph again.
//!
//! A pointer under the path written names a place inside the value (as
//! `get PATH` writes them); any other names an object already in the
//! document. A reference to a place inside the value cannot go in the
//! write that creates its object, so it is written as null there and set
//! right after, in the same batch (one message to the relay).

use std::collections::HashSet;

use facsimile::typed::pointer::{self, escape};
use facsimile::{Input, Node, Value};
use serde_json::Value as Json;

/// A value to write, read from the notation `get` writes.
pub(crate) struct Written {
    /// What to write at the path; a reference to a place inside the value
    /// is null here, and in [`Written::links`].
    input: Input,
    /// The references to places inside the value: where each is (`at`)
    /// and the place it names (`to`), as pointers under the path.
    links: Vec<Link>,
}

struct Link {
    at: String,
    to: String,
}

/// Reads `json`, to be written at `path` of `node`'s document.
///
/// # Errors
/// What the user reads: a reference that names nothing (or a value that is
/// not an object), or a place inside the value where no object is written
/// in full, and a map with both keys `$ref` and `$$ref`.
pub(crate) fn read(json: &Json, path: &str, node: &Node) -> Result<Written, String> {
    let mut reader = Reader {
        path,
        node,
        segments: Vec::new(),
        links: Vec::new(),
    };
    let input = reader.input(json)?;
    let links = reader.links;
    for link in &links {
        let inside = &link.to[path.len()..];
        if written_at(json, inside).is_none() {
            return Err(format!(
                "{{\"$ref\": {:?}}} at {:?}: no object is written in full there in the value \
                 (a reference names the place where its object is written, as `get` writes it)",
                link.to, link.at
            ));
        }
    }
    Ok(Written { input, links })
}

impl Written {
    /// Writes the value at `path` of `node`, then the references to places
    /// inside it: in one batch, one message.
    ///
    /// # Errors
    /// Those of [`Node::set_path`].
    pub(crate) fn write(self, node: &Node, path: &str) -> facsimile::Result<()> {
        node.batch(|| {
            // `-` appends: the value's place is the index it takes.
            let base = match path.strip_suffix("/-") {
                Some(parent) if !self.links.is_empty() => node
                    .get(parent)
                    .and_then(|v| v.as_array().map(|a| format!("{parent}/{}", a.len()))),
                _ => None,
            }
            .unwrap_or_else(|| path.to_string());
            node.set_path(path, self.input)?;
            for link in self.links {
                let place = |p: &str| format!("{base}{}", &p[path.len()..]);
                // Checked in the value before it was written.
                if let Some(object) = node.get(&place(&link.to)).and_then(|v| v.as_object()) {
                    node.set_path(&place(&link.at), object)?;
                }
            }
            Ok(())
        })
    }
}

/// Turns JSON into what to write, keeping track of where it is.
struct Reader<'a> {
    path: &'a str,
    node: &'a Node,
    /// The segments of the pointer from the path to the value being read.
    segments: Vec<String>,
    links: Vec<Link>,
}

impl Reader<'_> {
    /// The pointer of the value being read.
    fn here(&self) -> String {
        let mut p = self.path.to_string();
        for s in &self.segments {
            p.push('/');
            p.push_str(s);
        }
        p
    }

    fn input(&mut self, json: &Json) -> Result<Input, String> {
        match json {
            Json::Object(map) => {
                if let Some(to) = reference(map) {
                    return self.reference(to);
                }
                let mut entries = Vec::with_capacity(map.len());
                let mut keys = HashSet::new();
                for (key, value) in map {
                    let stored = stored_key(key);
                    if !keys.insert(stored) {
                        return Err(format!(
                            "the map at {:?} has both keys \"$ref\" and \"$$ref\", which both \
                             stand for the key \"$ref\" (write it \"$$ref\", as `get` does)",
                            self.here()
                        ));
                    }
                    self.segments.push(escape(stored).into_owned());
                    let input = self.input(value);
                    self.segments.pop();
                    entries.push((stored, input?));
                }
                Ok(Input::map(entries))
            }
            Json::Array(items) => {
                let mut inputs = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    self.segments.push(i.to_string());
                    let input = self.input(item);
                    self.segments.pop();
                    inputs.push(input?);
                }
                Ok(Input::array(inputs))
            }
            scalar => Ok(Input::from(scalar)),
        }
    }

    /// A reference to the object at `to`: inside the value, a link set
    /// once it is written; elsewhere, the object in the document.
    fn reference(&mut self, to: &str) -> Result<Input, String> {
        let at = self.here();
        if under(to, self.path) {
            self.links.push(Link {
                at,
                to: to.to_string(),
            });
            return Ok(Input::null());
        }
        match self.node.get(to) {
            Some(Value::Map(m)) => Ok(Input::from(m)),
            Some(Value::Array(a)) => Ok(Input::from(a)),
            Some(_) => Err(format!(
                "{{\"$ref\": {to:?}}} at {at:?}: what is at {to:?} is not a map or an array \
                 (a reference names an object)"
            )),
            None => Err(format!(
                "{{\"$ref\": {to:?}}} at {at:?}: nothing at {to:?} in the document, \
                 nor under {:?} in the value (to store a map with the key \"$ref\" as it \
                 is, write the key \"$$ref\")",
                self.path
            )),
        }
    }
}

/// The pointer of a reference: a map whose only key is `$ref`, holding a
/// string. A map with other keys, or another value, keeps `$ref` as a key
/// (`get` never writes one so, and `set` takes it as it did before).
fn reference(map: &serde_json::Map<String, Json>) -> Option<&str> {
    match map.get("$ref") {
        Some(Json::String(to)) if map.len() == 1 => Some(to),
        _ => None,
    }
}

/// A key as stored, from a key as `get` writes it: `$$ref` is `$ref`,
/// `$$$ref` is `$$ref`, and so on; any other key is itself.
fn stored_key(key: &str) -> &str {
    match key.strip_suffix("ref") {
        Some(dollars) if dollars.len() >= 2 && dollars.bytes().all(|b| b == b'$') => &key[1..],
        _ => key,
    }
}

/// The entry of a map of `get`'s notation for the key `stored`: written
/// with one more `$` when it is `$ref`, `$$ref` and so on (`$ref` may be
/// there as it is too, which `set` takes).
fn entry<'a>(map: &'a serde_json::Map<String, Json>, stored: &str) -> Option<&'a Json> {
    let escaped = stored
        .strip_suffix("ref")
        .is_some_and(|dollars| !dollars.is_empty() && dollars.bytes().all(|b| b == b'$'));
    match escaped {
        true => map
            .get(&format!("${stored}"))
            .or_else(|| map.get(stored).filter(|_| stored == "$ref")),
        false => map.get(stored),
    }
}

/// Whether `pointer` is `path` or under it.
fn under(pointer: &str, path: &str) -> bool {
    pointer
        .strip_prefix(path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The map or array written in full at `pointer` inside `json` (not
/// through a reference, nor a reference itself).
fn written_at<'a>(json: &'a Json, pointer: &str) -> Option<&'a Json> {
    let mut at = json;
    for segment in pointer::parse(pointer)? {
        at = match at {
            Json::Object(map) if reference(map).is_none() => entry(map, &segment)?,
            Json::Array(items) => items.get(pointer::index(&segment)?)?,
            _ => return None,
        };
    }
    match at {
        Json::Object(map) if reference(map).is_none() => Some(at),
        Json::Array(_) => Some(at),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use facsimile::LocalNetwork;
    use serde_json::json;

    use super::*;

    #[test]
    fn dollar_keys_lose_one_dollar_and_plain_ones_stay() {
        assert_eq!(stored_key("$$ref"), "$ref");
        assert_eq!(stored_key("$$$ref"), "$$ref");
        assert_eq!(stored_key("$ref"), "$ref");
        assert_eq!(stored_key("ref"), "ref");
        assert_eq!(stored_key("$$refs"), "$$refs");
        assert_eq!(stored_key("a$$ref"), "a$$ref");
    }

    /// Every object written by `to_json_with_refs` comes back as the same
    /// graph: one object where it was shared, a cycle where there was one.
    #[test]
    fn what_get_writes_is_read_back_as_the_same_graph() {
        let node = LocalNetwork::new().join("n");
        node.set_root(json!({"a": {"$ref": 1, "$$ref": 2, "v": [1]}}))
            .unwrap();
        let a = node.get("/a").unwrap();
        let a = a.as_map().unwrap();
        a.set("w", a.get("v").unwrap()).unwrap();
        a.set("self", a.clone()).unwrap();
        let json = node.root().to_json_with_refs("").unwrap();
        let written = read(&json, "", &node).unwrap();
        written.write(&node, "").unwrap();
        assert_eq!(node.root().to_json_with_refs("").unwrap(), json);
        let id = |p: &str| node.get(p).unwrap().as_object().unwrap().id();
        assert_eq!(id("/a/self"), id("/a"));
        assert_eq!(id("/a/w"), id("/a/v"));
        // In the order `get` printed them (serde_json's, by key).
        assert_eq!(
            node.get("/a").unwrap().as_map().unwrap().keys(),
            ["$$ref", "$ref", "self", "v", "w"]
        );
    }

    #[test]
    fn a_reference_inside_the_value_names_an_object_written_there() {
        let node = LocalNetwork::new().join("n");
        node.set_root(json!({"l": []})).unwrap();
        for (json, why) in [
            (json!({"$ref": "/x"}), "no object is written in full"),
            (json!({"a": 1, "b": {"$ref": "/x/a"}}), "no object"),
            (
                json!({"a": {"$ref": "/x/c"}, "b": {"$ref": "/x/a"}, "c": {}}),
                "no object",
            ),
            (json!({"$ref": 1, "$$ref": 2}), "both keys"),
            (json!({"b": {"$ref": "/l/0"}}), "nothing at \"/l/0\""),
            // A JSON Schema's reference, meant as data: the way to store it.
            (json!({"$ref": "#/defs/x"}), "write the key \"$$ref\""),
        ] {
            let e = read(&json, "/x", &node).err().unwrap();
            assert!(e.contains(why), "{json}: {e}");
        }
        // Appended: the pointers under `/l/-` name the new element.
        let json = json!({"a": {}, "b": {"$ref": "/l/-/a"}});
        read(&json, "/l/-", &node)
            .unwrap()
            .write(&node, "/l/-")
            .unwrap();
        let id = |p: &str| node.get(p).unwrap().as_object().unwrap().id();
        assert_eq!(id("/l/0/b"), id("/l/0/a"));
    }
}
