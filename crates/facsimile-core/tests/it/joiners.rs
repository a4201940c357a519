//! Late joiners: the answer to a sync covers everything the joiner did not
//! hear, whoever crashed meanwhile, and joiners syncing at once do not wait
//! for each other.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use facsimile_core::sim::{Sim, Verdict};
use facsimile_core::{Config, Input, PeerId, Replica, WireFormat};

use crate::support::kind_of;

/// A member that finished its sync, wrote and crashed before a joiner
/// started listening, while the answerer had not yet read its `Joined`:
/// the joiner never hears from it again, so its write reaches the joiner
/// in the answer or never.
#[test]
fn a_write_the_answerer_has_not_read_when_asked_is_in_the_answer() {
    let mut sim = Sim::new(5, 1);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    let x = sim.add("x");
    sim.with(x, Replica::sync);
    // x's broadcasts from its sync on (its Joined, its write) wait.
    sim.intercept(move |from, t| match from == x && t.to.is_none() {
        true => Verdict::Hold,
        false => Verdict::Deliver,
    });
    sim.run();
    assert!(sim.replica(x).is_ready());
    let root = sim.replica(x).root().as_ref_id().unwrap();
    sim.with(x, |r| r.map_set(root, "k", 1.into())).unwrap();
    sim.stop_intercepting();
    // On the link to r0, not yet read; j is not there to hear them.
    sim.release(x);
    sim.partition(x, true);
    let j = sim.add("j");
    sim.with(j, Replica::sync);
    sim.run();
    sim.crash(x);
    sim.partition(x, false);
    sim.run();
    let root = sim.replica(0).root().as_ref_id().unwrap();
    assert_eq!(sim.replica(0).map_get(root, "k").unwrap(), Some(1.into()));
    // x offers nothing now: the transport reports it gone.
    let gone = sim.replica(x).peer_id().clone();
    sim.with(0, |r| r.evict(&gone));
    sim.run();
    assert!(sim.replica(j).is_ready());
    let root = sim.replica(j).root().as_ref_id().unwrap();
    assert_eq!(sim.replica(j).map_get(root, "k").unwrap(), Some(1.into()));
    sim.assert_converged();
}

/// Replicas on links delivered by hand: one FIFO queue per sender and
/// receiver.
struct Links {
    replicas: Vec<Replica>,
    queues: BTreeMap<(usize, usize), VecDeque<Arc<[u8]>>>,
    /// The sender and recipient of each state sent (in JSON only).
    answers: Vec<(usize, usize)>,
    format: WireFormat,
}

impl Links {
    fn new(hosts: &[&str]) -> Links {
        Links::in_format(hosts, WireFormat::Json)
    }

    /// Replicas whose messages are in `format`.
    fn in_format(hosts: &[&str], format: WireFormat) -> Links {
        let mut links = Links {
            replicas: Vec::new(),
            queues: BTreeMap::new(),
            answers: Vec::new(),
            format,
        };
        for h in hosts {
            links.add(h);
        }
        links
    }

    /// A new replica, which hears only what is sent from now on.
    fn add(&mut self, host: &str) -> usize {
        self.add_with(host, Config::default())
    }

    /// [`Links::add`] with `config` (its messages in the links' format).
    fn add_with(&mut self, host: &str, config: Config) -> usize {
        let i = self.replicas.len();
        let config = config.wire_format(self.format);
        let tag = u32::try_from(i).unwrap() + 1;
        self.replicas
            .push(Replica::new(PeerId::new(host, tag), config));
        self.flush(i);
        i
    }

    /// Queues what replica `i` sent.
    fn flush(&mut self, i: usize) {
        while let Some(t) = self.replicas[i].poll_transmit() {
            if kind_of(&t.bytes).as_deref() == Some("SyncAnswer") {
                let to = t.to.expect("an answer names its recipient");
                self.answers.push((i, usize::try_from(to).unwrap() - 1));
            }
            for j in 0..self.replicas.len() {
                let tag = self.replicas[j].peer_id().incarnation();
                if j != i && t.to.is_none_or(|to| to == tag) {
                    let q = self.queues.entry((i, j)).or_default();
                    q.push_back(t.bytes.clone());
                }
            }
        }
    }

    /// Delivers what is on the link from `from` to `to`.
    fn deliver(&mut self, from: usize, to: usize) {
        while let Some(bytes) = self
            .queues
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
        {
            self.replicas[to].handle_message(&bytes).unwrap();
            self.flush(to);
        }
    }

    /// Delivers what is on each link of `links`, `(from, to)`, in turn.
    fn deliver_each(&mut self, links: &[(usize, usize)]) {
        for &(from, to) in links {
            self.deliver(from, to);
        }
    }

    /// Delivers everything, link by link, until nothing is in flight.
    fn run(&mut self) {
        while let Some(&link) = self
            .queues
            .iter()
            .find(|(_, q)| !q.is_empty())
            .map(|(l, _)| l)
        {
            self.deliver(link.0, link.1);
        }
    }

    fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Replica) -> R) -> R {
        let r = f(&mut self.replicas[i]);
        self.flush(i);
        r
    }

    /// Replica 0 sets a map as the root, and every replica hears of it
    /// and of every other.
    fn set_root(&mut self) {
        self.run();
        self.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
        self.run();
    }

    /// Every replica's snapshot is replica 0's.
    fn assert_agree(&mut self) {
        let first = self.replicas[0].snapshot();
        for r in &mut self.replicas[1..] {
            assert_eq!(r.snapshot(), first);
        }
    }

    /// Takes the last message on the link from `from` to `to` off it.
    fn take_last(&mut self, from: usize, to: usize) -> Arc<[u8]> {
        let q = self.queues.get_mut(&(from, to)).expect("a link");
        q.pop_back().expect("a message in flight")
    }

    /// Hands `bytes` to replica `to` as if it came on a link, `times` times.
    fn replay(&mut self, to: usize, bytes: &[u8], times: usize) {
        for _ in 0..times {
            self.replicas[to].handle_message(bytes).unwrap();
            self.flush(to);
        }
    }
}

/// Two members sync at once and fetch from two answerers that read their
/// requests in opposite orders: each answerer waits for the other joiner's
/// offer, which that joiner sends on hearing the request while it syncs.
#[test]
fn two_joiners_whose_answerers_read_them_in_opposite_orders_are_both_answered() {
    let (s, t, j, p) = (0, 1, 2, 3);
    let mut net = Links::new(&["s", "t", "j", "p"]);
    net.set_root();
    net.with(j, Replica::sync);
    net.with(p, Replica::sync);
    net.deliver_each(&[(p, s), (j, s), (j, t), (p, t), (p, j), (j, p)]);
    // j fetches from s, p from t.
    net.deliver(s, j);
    net.deliver(t, p);
    // No time passes: no sync timer fires.
    net.run();
    assert!(net.replicas[j].is_ready() && net.replicas[p].is_ready());
    net.assert_agree();
}

/// A joiner whose only offer, when its sync timer fires, is from a peer
/// syncing itself fetches from that peer, which keeps the fetch and answers
/// once its own sync completes.
#[test]
fn a_peer_syncing_when_fetched_answers_once_synced() {
    let (s, p) = (0, 1);
    let mut net = Links::new(&["s", "p"]);
    net.set_root();
    net.with(p, Replica::sync);
    net.deliver(p, s);
    let j = net.add("j");
    net.with(j, Replica::sync);
    // p hears j's request while it syncs and offers; p did not welcome j,
    // so j waits for another offer.
    net.deliver(j, p);
    net.deliver(p, j);
    assert!(net.queues[&(j, p)].is_empty(), "no fetch yet");
    net.with(j, |r| r.handle_timeout(Duration::from_secs(6)));
    let fetch = net.queues[&(j, p)].back().map(|b| kind_of(b));
    assert_eq!(fetch, Some(Some("SyncFetch".into())));
    net.deliver(j, p);
    assert!(!net.replicas[p].is_ready());
    net.run();
    assert!(net.replicas[p].is_ready() && net.replicas[j].is_ready());
    assert_eq!(net.answers, [(s, p), (p, j)]);
    net.assert_agree();
}

/// A joiner that never reports its sync complete cannot have the whole
/// state sent to it again and again by repeating its fetch: a relay
/// (which answers a fetch at once) and any replica serving a departed
/// joiner (answered at once, to tell it) answer one fetch per sync
/// request. A joiner that lost its answer asks again, and that request is
/// answered.
#[test]
fn repeated_fetches_of_one_sync_request_cost_one_state() {
    for relay in [true, false] {
        let mut net = Links::new(&[]);
        let config = match relay {
            true => Config::default().relay(),
            false => Config::default(),
        };
        let s = net.add_with("s", config);
        net.with(s, |r| r.set_root(Input::Map(vec![])).unwrap());
        let j = net.add("j");
        net.run();
        net.with(j, Replica::sync);
        net.deliver(j, s);
        if !relay {
            // Evicted while it syncs: the state is how it learns it.
            let gone = net.replicas[j].peer_id().clone();
            net.with(s, |r| r.evict(&gone));
        }
        net.deliver(s, j);
        let fetch = net.take_last(j, s);
        assert_eq!(kind_of(&fetch).as_deref(), Some("SyncFetch"));
        net.replay(s, &fetch, 50);
        assert_eq!(net.answers, [(s, j)], "relay {relay}: one state");
        // The answer lost, the joiner asks again (its sync timer would).
        net.queues.clear();
        net.with(j, Replica::sync);
        net.deliver(j, s);
        net.deliver(s, j);
        let fetch = net.take_last(j, s);
        net.replay(s, &fetch, 50);
        assert_eq!(net.answers, [(s, j), (s, j)], "relay {relay}: asked again");
    }
}

/// A joiner syncs again as soon as it is done, and a member reads its
/// `Joined` and new request and offers before the answerer has read that
/// `Joined`: the answerer keeps the offer for the new sync, and answers
/// it without a sync timeout. The first sync is answered by the answerer
/// itself or by the member.
#[test]
fn an_offer_to_a_joiner_s_next_sync_read_before_its_joined_counts() {
    for first in ["s", "b"] {
        let (s, b, j) = (0, 1, 2);
        let mut net = Links::new(&["s", "b", "j"]);
        net.set_root();
        net.with(j, Replica::sync);
        net.deliver_each(&[(j, b), (j, s), (b, s), (s, b)]);
        // The joiner fetches from the offer it reads first.
        let (x, y) = if first == "s" { (s, b) } else { (b, s) };
        net.deliver_each(&[(x, j), (y, j), (j, x), (x, j)]);
        assert!(net.replicas[j].is_ready(), "{first}: the first sync");
        net.with(j, Replica::sync);
        // b reads the Joined and the new request, and offers; s reads that
        // offer before the Joined.
        net.deliver_each(&[(j, b), (b, s), (j, s), (s, j), (b, j)]);
        // The joiner fetches from s. No time passes: no sync timer fires.
        net.run();
        assert!(net.replicas[j].is_ready(), "{first}: the second sync");
        assert_eq!(net.answers, [(x, j), (s, j)], "{first}");
        let snapshot = net.replicas[s].snapshot();
        assert_eq!(net.replicas[j].snapshot(), snapshot);
    }
}

/// A newcomer completes its sync while a joiner that asked before it
/// listened still syncs: it offers to that joiner, which fetches from it
/// (it heard it complete, and no other offer reached it yet). The offers
/// to the joiner were made before the newcomer listened, and the state it
/// loaded covers them: it answers without a sync timeout.
#[test]
fn a_joiner_fetching_from_a_newcomer_that_completed_is_answered() {
    for format in [WireFormat::Json, WireFormat::Binary] {
        a_newcomer_that_completed_answers(format);
    }
}

fn a_newcomer_that_completed_answers(format: WireFormat) {
    let (s, t) = (0, 1);
    let mut net = Links::in_format(&["s", "t"], format);
    net.set_root();
    let j = net.add("j");
    net.run();
    net.with(j, Replica::sync);
    // s and t offer to j; the offers do not reach j yet.
    net.deliver_each(&[(j, s), (j, t), (t, s), (s, t)]);
    let n = net.add("n");
    net.with(n, Replica::sync);
    for to in [s, t, j] {
        net.deliver(n, to);
    }
    // n fetches from s, which answers once t and j offered to n.
    net.deliver_each(&[(s, n), (n, s), (t, s), (j, s), (s, n)]);
    assert!(net.replicas[n].is_ready());
    assert!(!net.replicas[j].is_ready());
    // j hears n complete and offer, and fetches from it.
    let before = net.queues[&(j, n)].len();
    net.deliver(n, j);
    assert_eq!(net.queues[&(j, n)].len(), before + 1, "{format:?}: a fetch");
    // No time passes: no sync timer fires.
    net.deliver(j, n);
    net.deliver(n, j);
    assert!(net.replicas[j].is_ready(), "{format:?}");
    net.run();
    if format == WireFormat::Json {
        assert_eq!(net.answers, [(s, n), (n, j)]);
    }
    net.assert_agree();
}
