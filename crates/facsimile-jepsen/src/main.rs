//! `facsimile-jepsen`: fault injection on real facsimile processes.
//!
//! `run` starts a relay or a NATS cluster, client processes and a nemesis,
//! then checks what the clients recorded; `client` is one client process,
//! started by `run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use facsimile_jepsen::client::{self, ClientArgs, Workload};
use facsimile_jepsen::cluster::Backend;
use facsimile_jepsen::run::{self, Config};

#[derive(Parser)]
#[command(about = "Fault injection on real facsimile processes, checked Jepsen-style")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the system under a nemesis and check the histories.
    Run(RunArgs),
    /// One client process (started by `run`).
    Client(ClientArgs),
    /// Check recorded histories again: history files, or run directories
    /// whose `history-*.jsonl` files are read together, with the run's
    /// `faults.jsonl` (without one the lock check is UNCHECKED), and what
    /// else the run's verdict covered (snapshots, stalls, the run's errors
    /// and shortfalls). Fails unless everything checked passed.
    Check {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The faults injected (a `faults.jsonl`), for history files, or
        /// instead of a directory's own.
        #[arg(long)]
        faults: Option<PathBuf>,
    },
    /// Runs a program that dies with the runner that started it (started
    /// by `run`, for its servers).
    #[command(hide = true)]
    Guard {
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The system under test (every backend with --smoke or --long).
    #[arg(long, value_enum, required_unless_present_any = ["smoke", "long"])]
    backend: Option<Backend>,
    /// The workload (every workload with --long).
    #[arg(long, value_enum, default_value = "all")]
    workload: Workload,
    /// Client processes at once.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// The seed of the nemesis's schedule and the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of workload under faults.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Where histories, logs and summaries go.
    #[arg(long)]
    out: PathBuf,
    /// Partition through in-process TCP proxies instead of network
    /// namespaces (the fallback without root).
    #[arg(long)]
    proxies: bool,
    /// Keep the servers' data on the plain file system and never stall
    /// it, even where loop mounts and `fsfreeze` work (nor slow it down).
    #[arg(long)]
    no_disk_stalls: bool,
    /// Never slow the servers' disks down (blkio write throttling), even
    /// where it works; they are still stalled.
    #[arg(long)]
    no_disk_slow: bool,
    /// NATS servers `fsync` every write to their stores (`sync_interval:
    /// always`) rather than every 2 minutes, NATS's default: only then do
    /// slow disks slow their writes down.
    #[arg(long)]
    nats_sync_always: bool,
    /// The short default runs: the relay and NATS, every workload mixed,
    /// 40 s each with fixed seeds.
    #[arg(long, conflicts_with = "long")]
    smoke: bool,
    /// The long runs: each backend with each workload for --duration
    /// seconds (default here 240 s: 32 minutes in all).
    #[arg(long)]
    long: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Client(args) => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .init();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            match rt.block_on(client::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("client: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Check { paths, faults } => check(&paths, faults.as_deref()),
        Cmd::Guard { command } => {
            eprintln!("{}", facsimile_jepsen::cluster::guard(&command));
            ExitCode::FAILURE
        }
        Cmd::Run(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime");
            // The run is dropped on `SIGTERM`, `SIGINT`, `SIGHUP` (its
            // terminal closed) or `SIGQUIT`, which cleans up
            // (`Runner`'s drop), and exits as the signal would have.
            rt.block_on(async {
                tokio::select! {
                    code = runs(args) => code,
                    signal = stop_signal() => {
                        eprintln!("stopped by {signal}: the run's processes, namespaces and disks are removed");
                        ExitCode::from(128 + signal as u8)
                    }
                }
            })
        }
    }
}

/// The first `SIGTERM`, `SIGINT`, `SIGHUP` or `SIGQUIT`: each would end
/// the runner and leave its processes, namespaces and disks behind.
async fn stop_signal() -> nix::sys::signal::Signal {
    use nix::sys::signal::Signal;
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut quit)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::quit()),
    ) else {
        // Without handlers the default action stands.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => Signal::SIGTERM,
        _ = int.recv() => Signal::SIGINT,
        _ = hup.recv() => Signal::SIGHUP,
        _ = quit.recv() => Signal::SIGQUIT,
    }
}

/// Checks each run directory (or the given files, together) and prints
/// the checkers' report and what else was checked or could not be.
fn check(paths: &[PathBuf], faults: Option<&Path>) -> ExitCode {
    // A group: its name, its histories, its faults, its run directory.
    type Group = (String, Vec<PathBuf>, Option<PathBuf>, Option<PathBuf>);
    let mut groups: Vec<Group> = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut histories: Vec<PathBuf> = match std::fs::read_dir(p) {
                Ok(dir) => dir.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => {
                    eprintln!("{}: {e}", p.display());
                    return ExitCode::FAILURE;
                }
            };
            histories.retain(|h| {
                h.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("history-") && n.ends_with(".jsonl"))
            });
            histories.sort();
            if histories.is_empty() {
                eprintln!("{}: no history-*.jsonl file to check", p.display());
                return ExitCode::FAILURE;
            }
            let own = Some(p.join("faults.jsonl")).filter(|f| f.is_file());
            let faults = faults.map(Path::to_owned).or(own);
            groups.push((p.display().to_string(), histories, faults, Some(p.clone())));
        } else {
            files.push(p.clone());
        }
    }
    if !files.is_empty() {
        groups.push(("files".to_string(), files, faults.map(Path::to_owned), None));
    }
    let mut valid = true;
    for (name, histories, faults, dir) in groups {
        match run::recheck(&histories, faults.as_deref(), dir.as_deref()) {
            Ok(recheck) => {
                println!("{name}: {} histories\n{}", histories.len(), recheck.text);
                valid &= recheck.valid;
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                valid = false;
            }
        }
    }
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn configs(args: &RunArgs) -> Vec<Config> {
    let config = |backend: Backend, workload: Workload, seed: u64, duration: u64| {
        let name = format!("{backend:?}-{workload:?}-s{seed}").to_lowercase();
        Config {
            backend,
            workload,
            clients: args.clients,
            seed,
            duration,
            out: args.out.join(name),
            proxies: args.proxies,
            disk_stalls: !args.no_disk_stalls,
            disk_slow: !args.no_disk_slow,
            nats_sync_always: args.nats_sync_always,
        }
    };
    let backends = [Backend::Relay, Backend::Nats];
    if args.smoke {
        vec![
            config(Backend::Relay, Workload::All, 1, 40),
            config(Backend::Nats, Workload::All, 2, 40),
        ]
    } else if args.long {
        let duration = if args.duration == 60 {
            240
        } else {
            args.duration
        };
        let workloads = [
            Workload::Registers,
            Workload::Lists,
            Workload::Locks,
            Workload::All,
        ];
        let mut all = Vec::new();
        for b in backends {
            for (i, w) in workloads.into_iter().enumerate() {
                all.push(config(b, w, args.seed + i as u64, duration));
            }
        }
        all
    } else {
        let backend = args.backend.unwrap_or(Backend::Relay);
        vec![config(backend, args.workload, args.seed, args.duration)]
    }
}

async fn runs(args: RunArgs) -> ExitCode {
    let mut rows = Vec::new();
    let mut valid = true;
    for config in configs(&args) {
        let command = format!(
            "facsimile-jepsen run --backend {} --workload {} --clients {} --seed {} --duration {} --out {}{}{}{}{}",
            format!("{:?}", config.backend).to_lowercase(),
            format!("{:?}", config.workload).to_lowercase(),
            config.clients,
            config.seed,
            config.duration,
            config.out.display(),
            if config.proxies { " --proxies" } else { "" },
            if config.disk_stalls {
                ""
            } else {
                " --no-disk-stalls"
            },
            if config.disk_slow {
                ""
            } else {
                " --no-disk-slow"
            },
            if config.nats_sync_always {
                " --nats-sync-always"
            } else {
                ""
            }
        );
        println!("== {command}");
        match run::run(config, command).await {
            Ok(summary) => {
                println!("check: {}", summary.check);
                for line in run::lock_failure_lines(&summary.lock_failures) {
                    println!("{line}");
                }
                for e in &summary.errors {
                    println!("error: {e}");
                }
                for w in &summary.stalls {
                    println!("stall: {w}");
                }
                for w in &summary.shortfalls {
                    println!("too little: {w}");
                }
                valid &= summary.valid;
                rows.push(run::row(&summary));
            }
            Err(e) => {
                eprintln!("the run failed: {e}");
                valid = false;
            }
        }
    }
    println!("\n{}", run::HEADER);
    for r in rows {
        println!("{r}");
    }
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
