//! Comparative benchmark of CRDT libraries on identical workloads.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml -- all [--quick] [--timeout SECS]
//! cargo run --release --manifest-path bench/Cargo.toml -- run SYSTEM WORKLOAD [--n N] [--totals-only] [--timeout SECS]
//! ```
//!
//! Each (system, workload) pair runs in its own child process (the hidden
//! `one SYSTEM WORKLOAD N` subcommand), so its peak memory is its own and a
//! crash or a timeout loses only that pair. The child prints one JSON line;
//! the parent gathers them into a markdown table. `all` also writes the table
//! to `results/latest.md` and the JSON lines to `results/latest.jsonl`
//! (`--quick`, a smoke run at N/10, writes `results/quick.*` instead).
//!
//! The library half of this crate (`src/lib.rs`) holds the trait, the
//! workloads and the implementations; this file is only the command line.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use facsimile_bench::dispatch;
use facsimile_bench::report::{Report, Status, markdown_table};
use facsimile_bench::workload::Workload;

const USAGE: &str = "\
usage:
  facsimile-bench all [--quick] [--repeats K] [--timeout SECS]
  facsimile-bench run SYSTEM WORKLOAD [--n N] [--totals-only] [--timeout SECS]
  facsimile-bench table RUNS.jsonl

systems:   facsimile, yrs, yrs-v2, loro, automerge
workloads: map_set, map_overwrite, array_push, nested, two_writers, catch_up,
           seq_stress, seq_churn, graph_sync, sixteen

--totals-only skips the second run that splits an incremental workload's
time into local, encode and apply. `table` writes results/latest.md and
results/latest.jsonl from the JSON lines of `run` commands (the median run
of each pair), for rounds run by hand.";

/// The per-pair timeout when none is given: five minutes for each of an
/// incremental workload's two runs.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A pair whose first run takes less than this runs nine times, in nine
/// passes over all such pairs, and reports its median run: one sample of a
/// run of a few seconds on a shared machine varies by up to a half, and the
/// median of five still moved by a fifth between identical full runs.
const REPEAT_BELOW: Duration = Duration::from_secs(10);

/// Runs of a repeated pair when `--repeats` is not given.
const REPEATS: usize = 9;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("all") => cmd_all(&args[1..]),
        Some("run") => cmd_run(&args[1..]),
        Some("one") => cmd_one(&args[1..]),
        Some("table") => cmd_table(&args[1..]),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Options shared by `all` and `run`.
struct Options {
    positional: Vec<String>,
    quick: bool,
    n: Option<usize>,
    repeats: usize,
    phases: bool,
    timeout: Duration,
}

fn parse_options(args: &[String], allow_quick: bool, allow_n: bool) -> Result<Options, String> {
    let mut options = Options {
        positional: Vec::new(),
        quick: false,
        n: None,
        repeats: REPEATS,
        phases: true,
        timeout: DEFAULT_TIMEOUT,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" if allow_quick => options.quick = true,
            "--n" if allow_n => options.n = Some(parse_number(args.next(), "--n")?),
            "--totals-only" if allow_n => options.phases = false,
            "--repeats" if allow_quick => {
                options.repeats = parse_number(args.next(), "--repeats")?.max(1);
            }
            "--timeout" => {
                let secs = parse_number(args.next(), "--timeout")?;
                options.timeout = Duration::from_secs(secs as u64);
            }
            flag if flag.starts_with("--") => {
                return Err(format!("unknown option {flag}\n{USAGE}"));
            }
            _ => options.positional.push(arg.clone()),
        }
    }
    Ok(options)
}

fn parse_number(value: Option<&String>, flag: &str) -> Result<usize, String> {
    value
        .and_then(|v| v.replace('_', "").parse().ok())
        .ok_or_else(|| format!("{flag} needs a number\n{USAGE}"))
}

fn parse_workload(name: &str) -> Result<Workload, String> {
    Workload::from_name(name).ok_or_else(|| format!("unknown workload {name}\n{USAGE}"))
}

fn cmd_all(args: &[String]) -> Result<(), String> {
    let options = parse_options(args, true, false)?;
    if !options.positional.is_empty() {
        return Err(USAGE.to_owned());
    }
    let mut skipped = Vec::new();
    for system in dispatch::SYSTEMS {
        if dispatch::availability(system) == Some(dispatch::Availability::NotYetImplemented) {
            eprintln!("{system}: not yet implemented, skipping");
            skipped.push(system);
        }
    }
    let mut pairs = Vec::new();
    for workload in Workload::ALL {
        for system in dispatch::SYSTEMS {
            if let Some(n) = dispatch::default_n(system, workload) {
                let n = if options.quick { (n / 10).max(1) } else { n };
                pairs.push((workload, system, n));
            }
        }
    }
    let mut runs: Vec<Vec<Report>> = Vec::new();
    for (i, &(workload, system, n)) in pairs.iter().enumerate() {
        eprint!(
            "[{}/{}] {system} {} N={n} ... ",
            i + 1,
            pairs.len(),
            workload.name()
        );
        let report = run_child(system, workload, n, true, options.timeout);
        let millis = report.total.as_secs_f64() * 1e3;
        eprintln!("{millis:.0} ms {:?}", report.status);
        runs.push(vec![report]);
    }
    let short = |r: &Report| r.status == Status::Ok && r.total < REPEAT_BELOW;
    for pass in 2..=options.repeats {
        for (&(workload, system, n), pair_runs) in pairs.iter().zip(&mut runs) {
            if !short(&pair_runs[0]) {
                continue;
            }
            eprint!("[pass {pass}] {system} {} N={n} ... ", workload.name());
            let report = run_child(system, workload, n, true, options.timeout);
            let millis = report.total.as_secs_f64() * 1e3;
            eprintln!("{millis:.0} ms {:?}", report.status);
            pair_runs.push(report);
        }
    }
    let reports: Vec<Report> = runs.into_iter().map(median_run).collect();

    let table = markdown_table(&reports);
    println!("{table}");
    let stem = if options.quick { "quick" } else { "latest" };
    let dir = results_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let document = results_document(&table, &options, &skipped);
    write_file(&dir.join(format!("{stem}.md")), &document)?;
    let lines: String = reports.iter().map(|r| r.to_json_line() + "\n").collect();
    write_file(&dir.join(format!("{stem}.jsonl")), &lines)?;
    eprintln!("wrote {}", dir.join(format!("{stem}.md")).display());
    Ok(())
}

/// Writes the results files from JSON lines gathered from `run` commands:
/// the median run of each (workload, system) pair, in `all`'s order.
fn cmd_table(args: &[String]) -> Result<(), String> {
    let [path] = args else {
        return Err(USAGE.to_owned());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    let mut runs: Vec<Vec<Report>> = Vec::new();
    for report in text.lines().filter_map(Report::from_json_line) {
        match runs
            .iter_mut()
            .find(|r| r[0].workload == report.workload && r[0].system == report.system)
        {
            Some(pair) => pair.push(report),
            None => runs.push(vec![report]),
        }
    }
    let order = |r: &Report| {
        let w = Workload::ALL.iter().position(|w| w.name() == r.workload);
        let s = dispatch::SYSTEMS.iter().position(|s| *s == r.system);
        (w, s)
    };
    runs.sort_by_key(|r| order(&r[0]));
    let counts: Vec<usize> = runs.iter().map(Vec::len).collect();
    let reports: Vec<Report> = runs.into_iter().map(median_run).collect();
    let table = markdown_table(&reports);
    println!("{table}");
    let options = Options {
        positional: vec!["table".to_owned(), path.clone()],
        quick: false,
        n: None,
        repeats: counts.iter().copied().max().unwrap_or(1),
        phases: false,
        timeout: DEFAULT_TIMEOUT,
    };
    let mut document = results_document(&table, &options, &[]);
    document.push_str(&format!(
        "\nThis table was assembled with `table {path}` from `run SYSTEM WORKLOAD \
         --totals-only` commands (no local / encode / apply split), each row the \
         median of its runs ({} runs per pair at most).\n",
        options.repeats
    ));
    let dir = results_dir();
    write_file(&dir.join("latest.md"), &document)?;
    let lines: String = reports.iter().map(|r| r.to_json_line() + "\n").collect();
    write_file(&dir.join("latest.jsonl"), &lines)?;
    eprintln!("wrote {}", dir.join("latest.md").display());
    Ok(())
}

/// The run with the median total time; a failed run wins, so that a
/// failure is never hidden behind a good sample.
fn median_run(mut runs: Vec<Report>) -> Report {
    if let Some(i) = runs.iter().position(|r| r.status != Status::Ok) {
        return runs.swap_remove(i);
    }
    runs.sort_by_key(|r| r.total);
    runs.swap_remove(runs.len() / 2)
}

fn cmd_run(args: &[String]) -> Result<(), String> {
    let options = parse_options(args, false, true)?;
    let [system, workload] = options.positional.as_slice() else {
        return Err(USAGE.to_owned());
    };
    let workload = parse_workload(workload)?;
    match dispatch::availability(system) {
        None => return Err(format!("unknown system {system}\n{USAGE}")),
        Some(dispatch::Availability::NotYetImplemented) => {
            println!("{system}: not yet implemented, skipping");
            return Ok(());
        }
        Some(dispatch::Availability::Ready) => {}
    }
    let n = options
        .n
        .or_else(|| dispatch::default_n(system, workload))
        .expect("a ready system has a default N");
    let report = run_child(system, workload, n, options.phases, options.timeout);
    println!("{}", markdown_table(std::slice::from_ref(&report)));
    println!("{}", report.to_json_line());
    Ok(())
}

/// The hidden child entry point: runs one pair and prints its JSON line.
/// A fourth argument `totals` skips the run that splits the phases.
fn cmd_one(args: &[String]) -> Result<(), String> {
    let (system, workload, n, phases) = match args {
        [system, workload, n] => (system, workload, n, true),
        [system, workload, n, totals] if totals == "totals" => (system, workload, n, false),
        _ => return Err(USAGE.to_owned()),
    };
    let workload = parse_workload(workload)?;
    let n = parse_number(Some(n), "N")?;
    let report = dispatch::run(system, workload, n, phases)
        .ok_or_else(|| format!("{system}: not yet implemented"))?;
    if let Status::Fail(why) = &report.status {
        eprintln!("FAIL {system} {} N={n}: {why}", workload.name());
    }
    println!("{}", report.to_json_line());
    Ok(())
}

/// Runs one pair in a child process, killing it after `timeout`.
fn run_child(
    system: &str,
    workload: Workload,
    n: usize,
    phases: bool,
    timeout: Duration,
) -> Report {
    let failed = |status| Report::empty(system, workload.name(), n, status);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return failed(Status::Crash(format!("no executable path: {e}"))),
    };
    let mut command = Command::new(exe);
    command.args(["one", system, workload.name(), &n.to_string()]);
    if !phases {
        command.arg("totals");
    }
    let spawned = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return failed(Status::Crash(format!("spawn failed: {e}"))),
    };
    // Read stdout on a thread so a chatty child can never block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + timeout;
    let exit = loop {
        match child.try_wait() {
            Ok(Some(exit)) => break Some(exit),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return failed(Status::Crash(format!("wait failed: {e}"))),
        }
    };
    let out = reader.join().unwrap_or_default();
    let Some(exit) = exit else {
        return failed(Status::Timeout);
    };
    let parsed = out
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .and_then(Report::from_json_line);
    match parsed {
        Some(report) if exit.success() => report,
        _ => failed(Status::Crash(describe_exit(exit))),
    }
}

fn describe_exit(exit: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (exit.code(), exit.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "unknown exit".to_owned(),
    }
}

fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results")
}

fn write_file(path: &Path, contents: &str) -> Result<(), String> {
    std::fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The markdown document around the results table: how it was made, on
/// what, and how to read it.
fn results_document(table: &str, options: &Options, skipped: &[&str]) -> String {
    let command = if !options.positional.is_empty() {
        options.positional.join(" ")
    } else if options.quick {
        "all --quick".to_owned()
    } else {
        "all".to_owned()
    };
    let mut doc = format!(
        "# Comparative benchmark results\n\n\
         Made by `cargo run --release --manifest-path bench/Cargo.toml -- {command}` \
         (per-pair timeout {} s).\n\n\
         Machine: {}.\n\n\
         Peers: {}.\n\n",
        options.timeout.as_secs(),
        machine_description(),
        peer_versions(),
    );
    doc.push_str(table);
    doc.push_str(
        "\n## Reading the table\n\n\
         - **N** is the workload's size: operations for `map_set`, `map_overwrite`, \
         `array_push`, `two_writers` (both writers together); the final array length for \
         `seq_stress`, the constant array length for `seq_churn` (whose ops are its 4 x N \
         churn edits, the fill untimed); maps in `items` for `nested`; objects for `graph_sync`; sets per \
         replica for `sixteen`. Where a library cannot finish the default N in \
         reasonable time it runs at a smaller one (listed below): automerge's remote apply \
         rewrites its columnar op set, so each apply grows with the document; yrs's local \
         insert or delete at an index walks the array from its start; loro's import of a \
         change concurrent with its own history replays the history since their common \
         ancestor, which grows in `sixteen`.\n\
         - **ops** are the edits made (each one update message), or the objects built for \
         the snapshot workloads. **µs/op** is total time / ops.\n\
         - **local / encode / apply** are sums over all operations: the local edit and \
         commit, encoding its update, and applying updates on the receiving replicas. They \
         come from a second run of the workload that reads the clock around each phase of \
         each operation, which the run behind **total** does not do (five clock reads per \
         operation cost about 0.1 µs here), so they may add up to more than total. For \
         `nested` and `graph_sync`, local is the build of the whole document in one \
         transaction.\n\
         - **total** is the wall time of the workload's loop (for the snapshot workloads: \
         build, snapshot encode, decode and read). A pair whose first run takes under 10 s \
         runs nine times, in nine passes over all such pairs; its row is the run with \
         the median total.\n\
         - **read** walks every map and array of the received replica and sums the \
         integers. loro loads snapshots lazily, so part of its decode happens during read.\n\
         - **peak MB** is the child process's VmHWM, read before the final convergence \
         check; it includes every replica of the workload (16 for `sixteen`).\n\
         - Per-operation update paths: yrs `TransactionMut::encode_update_v1` / \
         `apply_update` (yrs-v2: `encode_update_v2` / `Update::decode_v2`, and v2 \
         snapshots); loro `export(ExportMode::updates_in_range)` of the commit's span \
         / `import`; automerge `get_last_local_change().raw_bytes()` / \
         `load_incremental`. See each `bench/src/*_sys.rs` for why.\n\
         - `catch_up`: two replicas edit while disconnected, then catch up; **bytes/op** \
         is everything both sides sent (state or version vectors, diffs, sync \
         messages, facsimile's backlog of messages and its answers) over the edits; \
         **local** is the disconnected edits, **apply** the whole reconnection.\n",
    );
    for system in skipped {
        doc.push_str(&format!("- **{system}**: not yet implemented, skipped.\n"));
    }
    doc.push_str("\n## Smaller N\n\n");
    for system in dispatch::SYSTEMS {
        for workload in Workload::ALL {
            match dispatch::default_n(system, workload) {
                Some(n) if n != workload.default_n() => doc.push_str(&format!(
                    "- {system} `{}`: N = {n} (default {})\n",
                    workload.name(),
                    workload.default_n()
                )),
                _ => {}
            }
        }
    }
    if options.quick {
        doc.push_str("\nThis is a `--quick` run: every N above is divided by 10.\n");
    }
    doc
}

/// The CPU model, core count and memory of this machine.
fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / (1024.0 * 1024.0));
    format!("{model}, {cores} cores, {mem_gib:.0} GiB")
}

/// The versions of the peer libraries, read from `Cargo.lock`.
fn peer_versions() -> String {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .unwrap_or_default();
    let version = |name: &str| {
        let header = format!("name = \"{name}\"\nversion = \"");
        lock.find(&header)
            .and_then(|at| lock[at + header.len()..].split('"').next())
            .unwrap_or("?")
            .to_owned()
    };
    ["yrs", "loro", "automerge"]
        .map(|name| format!("{name} {}", version(name)))
        .join(", ")
}
