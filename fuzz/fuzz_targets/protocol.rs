//! The relay's wire protocol on what the network may carry: arbitrary bytes
//! through every frame decoder (a client's hello and frames, as the relay
//! reads them; the relay's frames, as a client reads them), and a client
//! session fed arbitrary frames from its relay between its node's sends,
//! the batches it writes and its reconnections.
//!
//! Checked: nothing panics; a frame that decodes encodes to one that decodes
//! to the same value (a client's frame to the same bytes); a frame the
//! session refuses leaves its outbox as it was; and the outbox sends
//! exactly what the node queued, in order, again after a reconnection
//! until acknowledged, dropping frames only when the relay says the node
//! must rejoin.

#![no_main]

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use bytes::Bytes;
use facsimile_protocol::{
    Admission, ClientHello, Down, Incoming, Outbox, ServerHello, Session, Up,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Step {
    /// The relay's next frame: its welcome on a new connection, else any.
    Frame(Vec<u8>),
    /// A well-formed acknowledgement of the first `n` frames sent on this
    /// connection (most arbitrary frames are not one).
    Ack(u8),
    /// A well-formed welcome (on a new connection), with how many frames
    /// of the last connection an evicting relay says it applied.
    Welcome {
        resumed: bool,
        member: bool,
        evicted: bool,
        taken: Option<u8>,
    },
    /// The node queues a message, for everybody or for one node.
    Send(Option<u32>, Vec<u8>),
    /// The client writes up to this many queued frames.
    Take(u8),
    /// The connection fails; the next one starts with a hello.
    Reconnect,
}

#[derive(Arbitrary, Debug)]
struct Case {
    bytes: Vec<u8>,
    steps: Vec<Step>,
}

fn decoders(data: &[u8]) {
    if let Ok(hello) = ClientHello::decode(data) {
        let again = ClientHello::decode(&hello.encode()).expect("an encoded hello decodes");
        assert_eq!(again, hello, "a hello changed through its encoding");
    }
    if let Ok(up) = Up::decode(Bytes::copy_from_slice(data)) {
        assert_eq!(
            &up.encode()[..],
            data,
            "a client's frame encodes to other bytes"
        );
    }
    let down = Down::decode(Bytes::copy_from_slice(data));
    if let Ok(down) = &down {
        let again = Down::decode(down.encode()).expect("an encoded frame decodes");
        assert_eq!(&again, down, "a relay's frame changed through its encoding");
    }
    if Down::is_message(data) {
        assert!(
            matches!(down, Err(_) | Ok(Down::Message { .. } | Down::Direct(_))),
            "a frame taken for a message decodes as something else: {down:?}"
        );
    }
}

/// What the outbox must hold: the frames queued and not completed, oldest
/// first, how many of them went out on the current connection, and how many
/// frames the relay acknowledged on it.
#[derive(Default)]
struct Model {
    open: VecDeque<Bytes>,
    on_wire: usize,
    acked: u64,
}

fn check(outbox: &Outbox, model: &Model) {
    assert_eq!(
        outbox.queued() - outbox.done(),
        model.open.len() as u64,
        "frames neither completed nor queued"
    );
}

fn session(steps: Vec<Step>) {
    let mut session = Session::new("doc", "token");
    let mut outbox = Outbox::default();
    let mut model = Model::default();
    let mut welcomed = false;
    let mut batch = Vec::new();
    for step in steps {
        let frame = match step {
            Step::Frame(f) => Bytes::from(f),
            Step::Ack(n) => Down::Ack(u64::from(n)).encode(),
            Step::Welcome {
                resumed,
                member,
                evicted,
                taken,
            } => Down::Hello(ServerHello::Welcome {
                log: 7,
                position: 0,
                relay: 1,
                resumed,
                member,
                evicted,
                max_frame: Some(1 << 20),
                taken: taken.map(u64::from),
            })
            .encode(),
            Step::Send(to, message) => {
                let open = !outbox.is_closed();
                assert_eq!(Session::send(&mut outbox, to, &message), open);
                if open {
                    let up = match to {
                        None => Up::Broadcast(Bytes::from(message)),
                        Some(tag) => Up::To(tag, Bytes::from(message)),
                    };
                    model.open.push_back(up.encode());
                }
                check(&outbox, &model);
                continue;
            }
            Step::Take(max) => {
                if welcomed {
                    outbox.take_batch(usize::from(max), &mut batch);
                    for frame in batch.drain(..) {
                        assert_eq!(
                            Some(&frame),
                            model.open.get(model.on_wire),
                            "a frame out of order"
                        );
                        model.on_wire += 1;
                    }
                }
                continue;
            }
            Step::Reconnect => {
                welcomed = false;
                let hello = ClientHello::decode(&session.hello("host", 1)).expect("a hello");
                assert_eq!(hello.resume, session.resume());
                continue;
            }
        };
        let (queued, done, dropped) = (outbox.queued(), outbox.done(), outbox.dropped());
        let unchanged = |outbox: &Outbox| {
            assert_eq!(
                (outbox.queued(), outbox.done(), outbox.dropped()),
                (queued, done, dropped),
                "a refused frame changed the outbox"
            );
        };
        if !welcomed {
            match session.welcome(frame, &mut outbox) {
                Ok(Admission::Rejoin { .. }) => {
                    assert_eq!(outbox.done(), outbox.queued(), "a rejoin kept frames");
                    model = Model::default();
                    welcomed = true;
                }
                Ok(_) => {
                    model.on_wire = 0;
                    model.acked = 0;
                    welcomed = true;
                }
                Err(_) => unchanged(&outbox),
            }
        } else {
            // An acknowledgement of the first `n` frames sent on this
            // connection completes those not acknowledged yet.
            let ack = match Down::decode(frame.clone()) {
                Ok(Down::Ack(n)) => Some(
                    n.checked_sub(model.acked)
                        .filter(|&k| k <= model.on_wire as u64)
                        .map(|k| (n, k as usize)),
                ),
                _ => None,
            };
            let received = session.receive(frame, &mut outbox);
            if let Some(ack) = ack {
                assert_eq!(ack.is_some(), received.is_ok(), "{ack:?}: {received:?}");
            }
            match received {
                Ok(Incoming::Acked) => {
                    let (n, completed) = ack.flatten().expect("an acknowledgement");
                    assert_eq!(outbox.done() - done, completed as u64, "frames completed");
                    model.open.drain(..completed);
                    model.on_wire -= completed;
                    model.acked = n;
                }
                Ok(Incoming::Closing(_)) => assert!(outbox.is_closed()),
                Ok(Incoming::Message(_)) => unchanged(&outbox),
                Err(_) => unchanged(&outbox),
            }
        }
        check(&outbox, &model);
    }
}

fuzz_target!(|case: Case| {
    decoders(&case.bytes);
    session(case.steps);
});
