//! The nemesis's schedule: faults one after another, each held for a
//! bounded time and then healed, drawn from a seeded `SmallRng` so that a
//! run is reproducible from its command line and seed (as far as real
//! processes' timing allows).

use std::fmt;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Cut client `slot` off the network (from the servers and the
    /// storage).
    PartitionClient {
        /// The client's slot.
        slot: usize,
    },
    /// Cut NATS server `server` off from the other servers and the clients.
    IsolateServer {
        /// The server's index.
        server: usize,
    },
    /// `SIGKILL` the relay, restart it on the same data after the hold.
    KillRelay,
    /// `SIGKILL` a NATS server (`None`: the document stream's leader),
    /// restart it after the hold.
    KillServer {
        /// The server's index, or the leader.
        server: Option<usize>,
    },
    /// `SIGKILL` client `slot`; after the hold a new process takes the slot.
    KillClient {
        /// The client's slot.
        slot: usize,
    },
    /// `SIGSTOP` client `slot`, `SIGCONT` after the hold: longer than the
    /// failure detection, so a lock it held passes on meanwhile.
    PauseClient {
        /// The client's slot.
        slot: usize,
    },
    /// Freeze the file system holding a server's data (`fsfreeze`), thaw
    /// it after the hold: its writes and `fsync`s block meanwhile.
    DiskStall {
        /// The server's index (the relay is 0), or the document stream's
        /// leader.
        server: Option<usize>,
    },
    /// Throttle a server's writes to its disk (blkio) for the hold: its
    /// writes and `fsync`s complete, slowly.
    DiskSlow {
        /// The server's index (the relay is 0), or the document stream's
        /// leader.
        server: Option<usize>,
        /// Bytes written per second at most.
        write_bps: u64,
        /// Write requests per second at most.
        write_iops: u32,
    },
}

impl Fault {
    /// The fault's kind, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::PartitionClient { .. } => "partition-client",
            Fault::IsolateServer { .. } => "isolate-server",
            Fault::KillRelay => "kill-relay",
            Fault::KillServer { .. } => "kill-server",
            Fault::KillClient { .. } => "kill-client",
            Fault::PauseClient { .. } => "pause-client",
            Fault::DiskStall { .. } => "disk-stall",
            Fault::DiskSlow { .. } => "disk-slow",
        }
    }
}

/// A fault at an offset from the start, held for a while.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Milliseconds from the start of the workload.
    pub at_ms: u64,
    /// How long the fault lasts before it is healed, in milliseconds.
    pub hold_ms: u64,
    /// The fault.
    pub fault: Fault,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>7.1}s  {:<17} {:>5.1}s  {:?}",
            self.at_ms as f64 / 1000.0,
            self.fault.kind(),
            self.hold_ms as f64 / 1000.0,
            self.fault
        )
    }
}

/// What the nemesis may do in a run.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    /// Client slots.
    pub clients: usize,
    /// NATS servers (0 for the relay).
    pub servers: usize,
    /// Whether partitions are possible (namespaces, or proxies for
    /// clients only).
    pub server_partitions: bool,
    /// Milliseconds a pause must exceed: the failure detection or lease.
    pub detection_ms: u64,
    /// Whether the servers' data is on disks that can be stalled.
    pub disk_stalls: bool,
    /// Whether the servers' writes to their disks can be throttled.
    pub disk_slow: bool,
}

/// The schedule of a run lasting `duration_ms`: faults from 2 s in until
/// 2 s before the end, separated by quiet gaps. Kinds come in rounds, each
/// kind once per round in a random order, so that a short run sees every
/// kind. Disk stalls and slow disks share one place in a round, and
/// alternate, a stall first: a round is no longer than without slow disks,
/// and a run with one disk fault, such as a short one, has the schedule it
/// had before slow disks existed. Faults never overlap, so a disk is never frozen or slow
/// while its server is killed (a kill would wait for the thaw, and so
/// would the restart; a restart is never throttled).
pub fn schedule(seed: u64, duration_ms: u64, scope: Scope) -> Vec<Step> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut kinds = vec![0, 1, 2, 3];
    if scope.servers > 0 && scope.server_partitions {
        kinds.push(4);
    }
    if scope.disk_stalls || scope.disk_slow {
        kinds.push(5);
    }
    let mut next_slow = !scope.disk_stalls;
    let mut round: Vec<u8> = Vec::new();
    let mut steps = Vec::new();
    let mut at = 2000;
    loop {
        if round.is_empty() {
            round = kinds.clone();
            round.shuffle(&mut rng);
        }
        let client = rng.random_range(0..scope.clients);
        let fault = match round.pop().unwrap_or(0) {
            0 => Fault::PartitionClient { slot: client },
            1 if scope.servers == 0 => Fault::KillRelay,
            1 => Fault::KillServer {
                // Half the time the stream's leader, the worst case.
                server: rng
                    .random_bool(0.5)
                    .then(|| rng.random_range(0..scope.servers)),
            },
            2 => Fault::PauseClient { slot: client },
            3 => Fault::KillClient { slot: client },
            5 => {
                let slow = next_slow;
                next_slow = if scope.disk_stalls && scope.disk_slow {
                    !slow
                } else {
                    slow
                };
                // Half the time the stream's leader, as for kills.
                let server = if scope.servers == 0 {
                    Some(0)
                } else {
                    rng.random_bool(0.5)
                        .then(|| rng.random_range(0..scope.servers))
                };
                if slow {
                    Fault::DiskSlow {
                        server,
                        // From about 5 to 40 small `fsync`s a second.
                        write_bps: rng.random_range(1..=8) * (64 << 10),
                        write_iops: rng.random_range(5..=40),
                    }
                } else {
                    Fault::DiskStall { server }
                }
            }
            _ => Fault::IsolateServer {
                server: rng.random_range(0..scope.servers),
            },
        };
        let hold_ms = match fault {
            Fault::PauseClient { .. } => scope.detection_ms + rng.random_range(1500..4000),
            Fault::DiskStall { .. } => rng.random_range(1500..6000),
            Fault::DiskSlow { .. } => rng.random_range(2000..8000),
            _ => rng.random_range(1000..5000),
        };
        if at + hold_ms + 2000 > duration_ms {
            return steps;
        }
        steps.push(Step {
            at_ms: at,
            hold_ms,
            fault,
        });
        at += hold_ms + rng.random_range(1000..4000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_of_bounded_sequential_faults() {
        let scope = Scope {
            clients: 3,
            servers: 3,
            server_partitions: true,
            detection_ms: 3000,
            disk_stalls: false,
            disk_slow: false,
        };
        let a = schedule(7, 120_000, scope);
        let b = schedule(7, 120_000, scope);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(a.len() > 5);
        for w in a.windows(2) {
            assert!(w[0].at_ms + w[0].hold_ms < w[1].at_ms, "faults overlap");
        }
        let last = a.last().unwrap();
        assert!(last.at_ms + last.hold_ms + 2000 <= 120_000);
        for s in &a {
            if matches!(s.fault, Fault::PauseClient { .. }) {
                assert!(s.hold_ms > scope.detection_ms);
            }
        }
        let kinds: std::collections::BTreeSet<_> = a.iter().map(|s| s.fault.kind()).collect();
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        let relay = schedule(
            7,
            120_000,
            Scope {
                servers: 0,
                ..scope
            },
        );
        assert!(relay.iter().all(|s| !matches!(
            s.fault,
            Fault::KillServer { .. } | Fault::IsolateServer { .. } | Fault::DiskStall { .. }
        )));
    }

    /// The server a fault kills, stalls or slows: `Some(None)` for the
    /// leader, which may be any server.
    fn server_of(fault: &Fault) -> Option<Option<usize>> {
        match *fault {
            Fault::KillRelay => Some(Some(0)),
            Fault::KillServer { server }
            | Fault::DiskStall { server }
            | Fault::DiskSlow { server, .. } => Some(server),
            _ => None,
        }
    }

    fn is_disk(fault: &Fault) -> bool {
        matches!(fault, Fault::DiskStall { .. } | Fault::DiskSlow { .. })
    }

    #[test]
    fn disk_faults_are_scheduled_when_possible_and_never_overlap_a_kill() {
        for servers in [0, 3] {
            for (disk_stalls, disk_slow) in [(true, false), (false, true), (true, true)] {
                let scope = Scope {
                    clients: 4,
                    servers,
                    server_partitions: true,
                    detection_ms: 3000,
                    disk_stalls,
                    disk_slow,
                };
                for seed in 0..50 {
                    let steps = schedule(seed, 240_000, scope);
                    let disk: Vec<&Step> = steps.iter().filter(|s| is_disk(&s.fault)).collect();
                    assert!(disk.len() >= 5, "seed {seed}: {} disk faults", disk.len());
                    for (i, s) in disk.iter().enumerate() {
                        // Alternating, a stall first, when both are possible.
                        let slow = !disk_stalls || (disk_slow && i % 2 == 1);
                        match s.fault {
                            Fault::DiskStall { .. } => {
                                assert!(!slow, "seed {seed}: disk fault {i} a stall");
                                assert!(s.hold_ms >= 1500 && s.hold_ms < 6000);
                            }
                            Fault::DiskSlow {
                                write_bps,
                                write_iops,
                                ..
                            } => {
                                assert!(slow, "seed {seed}: disk fault {i} slow");
                                assert!(s.hold_ms >= 2000 && s.hold_ms < 8000);
                                assert!((64 << 10..=512 << 10).contains(&write_bps));
                                assert!((5..=40).contains(&write_iops));
                            }
                            _ => unreachable!(),
                        }
                        if servers == 0 {
                            assert_eq!(server_of(&s.fault), Some(Some(0)));
                        }
                        for b in &steps {
                            let same = match (server_of(&s.fault), server_of(&b.fault)) {
                                (Some(x), Some(y)) => x.is_none() || y.is_none() || x == y,
                                _ => false,
                            };
                            let kill =
                                matches!(b.fault, Fault::KillRelay | Fault::KillServer { .. });
                            if kill && same {
                                let apart =
                                    s.at_ms + s.hold_ms < b.at_ms || b.at_ms + b.hold_ms < s.at_ms;
                                assert!(apart, "seed {seed}: disk fault {i} overlaps {b:?}");
                            }
                        }
                    }
                }
            }
            let scope = Scope {
                clients: 4,
                servers,
                server_partitions: true,
                detection_ms: 3000,
                disk_stalls: false,
                disk_slow: false,
            };
            let off = schedule(7, 240_000, scope);
            assert!(off.iter().all(|s| !is_disk(&s.fault)));
        }
    }

    #[test]
    fn slow_disks_leave_the_schedule_up_to_the_second_disk_fault_unchanged() {
        for servers in [0, 3] {
            let stalls = Scope {
                clients: 4,
                servers,
                server_partitions: true,
                detection_ms: 3000,
                disk_stalls: true,
                disk_slow: false,
            };
            for seed in 0..50 {
                let before = schedule(seed, 240_000, stalls);
                let after = schedule(
                    seed,
                    240_000,
                    Scope {
                        disk_slow: true,
                        ..stalls
                    },
                );
                // Up to and with the first disk fault, a stall either way.
                let second = |steps: &[Step]| {
                    steps
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| is_disk(&s.fault))
                        .nth(1)
                        .map_or(steps.len(), |(i, _)| i)
                };
                let n = second(&before);
                assert_eq!(n, second(&after), "seed {seed}");
                assert_eq!(
                    format!("{:?}", &before[..n]),
                    format!("{:?}", &after[..n]),
                    "seed {seed}"
                );
                assert!(matches!(after[n].fault, Fault::DiskSlow { .. }));
            }
        }
    }
}
