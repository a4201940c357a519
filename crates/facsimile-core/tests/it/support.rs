//! Reading and rewriting JSON messages, for tests that forge them from
//! honest ones.

#![allow(dead_code, unreachable_pub)]

/// Rewrites a JSON message.
/// A one-operation message (`Op`, `Next`) is edited in its general form
/// (`Ops`), which decodes the same.
pub fn edit_json(bytes: &[u8], f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).expect("a JSON message");
    if let Some(one) = v["body"].get_mut("Op").map(serde_json::Value::take) {
        v["body"] = serde_json::json!({"Ops": {
            "seq": one["seq"], "tick": one["tick"], "ops": [one["op"]],
        }});
    }
    if let Some(one) = v["body"].get_mut("Next").map(serde_json::Value::take) {
        v["body"] = serde_json::json!({"Ops": {
            "seq": one["seq"], "tick": 1, "ops": [one["op"]],
        }});
    }
    f(&mut v);
    serde_json::to_vec(&v).expect("serializable")
}

/// The JSON of a message, for matching on its kind.
pub fn json_of(bytes: &[u8]) -> Option<serde_json::Value> {
    if bytes.first() == Some(&b'{') {
        serde_json::from_slice(bytes).ok()
    } else {
        None
    }
}

/// The body kind of a JSON message (`"Ops"`, `"SyncAnswer"`, ...).
pub fn kind_of(bytes: &[u8]) -> Option<String> {
    let v = json_of(bytes)?;
    v["body"].as_object()?.keys().next().cloned()
}
