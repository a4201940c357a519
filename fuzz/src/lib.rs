//! Helpers shared by the fuzz targets and the seed-corpus example.

use std::time::Duration;

use facsimile_core::{Config, Input, PeerId, Replica, Value, WireFormat};

/// Tags of the replicas of [`small_document`]: alpha wrote the document,
/// bravo received it.
pub const ALPHA: u32 = 1;
/// See [`ALPHA`].
pub const BRAVO: u32 = 2;

/// Delivers everything `from` sends to `to` (and drops its events).
pub fn pump(from: &mut Replica, to: &mut Replica) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    while let Some(t) = from.poll_transmit() {
        if t.to.is_none_or(|tag| tag == to.peer_id().incarnation()) {
            to.handle_message(&t.bytes).expect("honest message");
        }
        sent.push(t.bytes.to_vec());
    }
    while from.poll_event().is_some() {}
    sent
}

/// Alpha and bravo sharing a small document: a root map with a string, an
/// array of scalars (one moved, one deleted), a nested map, a reference to
/// it, and bytes. Also returns every message exchanged, for seeds.
pub fn small_document(format: WireFormat) -> (Replica, Replica, Vec<Vec<u8>>) {
    let config = Config::default().wire_format(format);
    let mut a = Replica::new(PeerId::new("alpha", ALPHA), config.clone());
    let mut b = Replica::new(PeerId::new("bravo", BRAVO), config);
    let mut log = Vec::new();
    log.extend(pump(&mut a, &mut b));
    log.extend(pump(&mut b, &mut a));
    log.extend(pump(&mut a, &mut b));
    let root = a
        .set_root(Input::Map(vec![
            ("title".into(), "doc".into()),
            (
                "items".into(),
                Input::Array(vec![1.into(), 2.5.into(), "three".into(), ().into()]),
            ),
            ("meta".into(), Input::Map(vec![("n".into(), 1.into())])),
        ]))
        .expect("a fresh replica writes")
        .expect("a map");
    let items = a
        .map_get(root, "items")
        .unwrap()
        .unwrap()
        .as_ref_id()
        .unwrap();
    let meta = a
        .map_get(root, "meta")
        .unwrap()
        .unwrap()
        .as_ref_id()
        .unwrap();
    a.list_reorder(items, &[1, 0, 2, 3]).unwrap();
    a.list_splice(items, 3, 1, vec![]).unwrap();
    a.list_set(items, 0, Input::Value(Value::Bytes(vec![0, 255].into())))
        .unwrap();
    a.map_set(root, "alias", Input::Value(Value::Ref(meta)))
        .unwrap();
    a.map_delete(root, "title").unwrap();
    log.extend(pump(&mut a, &mut b));
    let root_b = b.root().as_ref_id().unwrap();
    b.map_set(root_b, "b", 2.into()).unwrap();
    log.extend(pump(&mut b, &mut a));
    a.handle_timeout(Duration::from_secs(2));
    b.handle_timeout(Duration::from_secs(2));
    log.extend(pump(&mut a, &mut b));
    log.extend(pump(&mut b, &mut a));
    (a, b, log)
}

/// Delivers every transmit of every replica to its recipients until
/// quiet, returning them all.
pub fn exchange(rs: &mut [Replica]) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    loop {
        let mut quiet = true;
        for i in 0..rs.len() {
            while let Some(t) = rs[i].poll_transmit() {
                quiet = false;
                for (j, r) in rs.iter_mut().enumerate() {
                    if j != i && t.to.is_none_or(|tag| tag == r.peer_id().incarnation()) {
                        r.handle_message(&t.bytes).expect("honest message");
                    }
                }
                sent.push(t.bytes.to_vec());
            }
            while rs[i].poll_event().is_some() {}
        }
        if quiet {
            return sent;
        }
    }
}

/// Messages worth starting from: everything of a small session (hello,
/// welcome, operations of every kind, acknowledgements), the messages alpha
/// sends next (which bravo applies rather than drops as duplicates), a lock
/// and its release, and a full sync handshake with its answer, in both
/// formats; and the replicas' saved states.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for format in [WireFormat::Binary, WireFormat::Json] {
        let (mut a, b, log) = small_document(format);
        out.extend(log);
        let root = a.root().as_ref_id().unwrap();
        a.map_set(root, "next", Input::Array(vec![7.into()]))
            .unwrap();
        let items = a
            .map_get(root, "items")
            .unwrap()
            .unwrap()
            .as_ref_id()
            .unwrap();
        a.list_splice(items, 0, 1, vec!["x".into()]).unwrap();
        a.lock(items, true).unwrap();
        let c = Replica::new(
            PeerId::new("charlie", 3),
            Config::default().wire_format(format),
        );
        let mut rs = vec![a, b, c];
        out.extend(exchange(&mut rs));
        rs[0].unlock(items).unwrap();
        rs[2].sync();
        out.extend(exchange(&mut rs));
        for r in rs.iter_mut() {
            r.handle_timeout(Duration::from_secs(10));
        }
        out.extend(exchange(&mut rs));
        rs[1].leave();
        out.extend(exchange(&mut rs));
        out.extend(rs.iter_mut().map(|r| r.export_state()));
    }
    out.sort();
    out.dedup();
    out
}
