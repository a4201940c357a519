//! A model of a node's document kept from its events alone, as
//! `tests/it/events.rs` keeps one, for nodes whose listeners run on their
//! transport's task: replayed in order, the events must reproduce the
//! document.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use facsimile::{Node, ObjectId, Prop, Subscription, Value};
use serde_json::json;

/// A value in the model: a scalar as JSON, or an object by id.
#[derive(Clone, Debug, PartialEq)]
enum MV {
    Scalar(serde_json::Value),
    Obj(ObjectId),
}

#[derive(Clone, Debug, PartialEq)]
enum MObj {
    Map(BTreeMap<String, MV>),
    List(Vec<MV>),
}

/// What a node's events say its document is.
///
/// A listener runs after its change and may see later ones: an object read
/// whole then already holds them, and the events that follow set its keys
/// to values they take later still, ending with the last. An array is read
/// whole at each of its changes.
#[derive(Default, Debug)]
pub(crate) struct Model {
    root: Option<MV>,
    objects: HashMap<ObjectId, MObj>,
}

impl Model {
    /// Reads `v` into the model, with the objects not seen before.
    fn capture(&mut self, v: &Value) -> MV {
        match v {
            Value::Map(m) => {
                if !self.objects.contains_key(&m.id()) {
                    self.objects.insert(m.id(), MObj::Map(BTreeMap::new()));
                    let entries = m.entries().unwrap_or_default();
                    let content = entries
                        .iter()
                        .map(|(k, v)| (k.to_string(), self.capture(v)))
                        .collect();
                    self.objects.insert(m.id(), MObj::Map(content));
                }
                MV::Obj(m.id())
            }
            Value::Array(a) => {
                if let std::collections::hash_map::Entry::Vacant(e) = self.objects.entry(a.id()) {
                    // Known before it is read: a cycle ends here.
                    e.insert(MObj::List(Vec::new()));
                    self.read_array(a);
                }
                MV::Obj(a.id())
            }
            v => MV::Scalar(v.to_json().expect("a scalar")),
        }
    }

    fn read_array(&mut self, a: &facsimile::ArrayRef) {
        let values = a.to_vec().unwrap_or_default();
        let content = values.iter().map(|v| self.capture(v)).collect();
        self.objects.insert(a.id(), MObj::List(content));
    }

    /// The model's document as JSON, objects labelled by id.
    pub(crate) fn render(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        let mut stack: Vec<ObjectId> = Vec::new();
        let label = |v: &MV, stack: &mut Vec<ObjectId>| match v {
            MV::Scalar(s) => s.clone(),
            MV::Obj(id) => {
                stack.push(*id);
                json!(format!("{id:?}"))
            }
        };
        let root = self
            .root
            .as_ref()
            .map_or(json!(null), |r| label(r, &mut stack));
        out.insert("root".into(), root);
        while let Some(id) = stack.pop() {
            let key = format!("{id:?}");
            if out.contains_key(&key) {
                continue;
            }
            let content = match self.objects.get(&id) {
                Some(MObj::Map(m)) => json!(
                    m.iter()
                        .map(|(k, v)| (k.clone(), label(v, &mut stack)))
                        .collect::<serde_json::Map<_, _>>()
                ),
                Some(MObj::List(l)) => {
                    json!(l.iter().map(|v| label(v, &mut stack)).collect::<Vec<_>>())
                }
                None => json!("missing"),
            };
            out.insert(key, content);
        }
        serde_json::Value::Object(out)
    }
}

/// A node's actual document, rendered as [`Model::render`] does.
pub(crate) fn actual(node: &Node) -> serde_json::Value {
    let mut m = Model::default();
    let root = node.root();
    m.root = Some(m.capture(&root));
    m.render()
}

/// Keeps a model of `node` up to date from its events only.
pub(crate) fn follow(node: &Node) -> (Arc<Mutex<Model>>, Vec<Subscription>) {
    let model = Arc::new(Mutex::new(Model::default()));
    {
        let mut m = model.lock().unwrap();
        let root = node.root();
        m.root = Some(m.capture(&root));
    }
    let md = model.clone();
    let changes = node.on_change(move |e| {
        let mut m = md.lock().unwrap();
        let id = e.target().id();
        match (e.prop(), e.target().as_array()) {
            (_, Some(a)) => {
                if m.objects.contains_key(&id) {
                    m.read_array(a);
                }
            }
            (Some(Prop::Key(k)), None) => {
                let new = e.new_value().map(|v| m.capture(v));
                if let Some(MObj::Map(map)) = m.objects.get_mut(&id) {
                    match new {
                        Some(v) => {
                            map.insert(k.to_string(), v);
                        }
                        None => {
                            map.remove(k.as_str());
                        }
                    }
                }
            }
            (_, None) => panic!("a change of a map without its key"),
        }
    });
    let md = model.clone();
    let roots = node.on_root_changed(move |root| {
        let mut m = md.lock().unwrap();
        m.root = Some(m.capture(root.new_value()));
    });
    (model, vec![changes, roots])
}
