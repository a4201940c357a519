//! The client commands: `get`, `set`, `watch`, `lock`.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use facsimile::net::{self, ConnectOptions, Connection, Status, TlsOptions};
use facsimile::typed::pointer;
use facsimile::{LockEvent, Origin, Value};
use futures_util::FutureExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::watch::Watcher;
use crate::{ClientArgs, Failure};

/// How long a command waits for the relay to acknowledge its last messages
/// when it leaves.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting may take before a terminal shows a spinner.
const SPINNER_AFTER: Duration = Duration::from_millis(300);

/// How a command joins the document.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// It only reads: the relay refuses a document that does not exist
    /// rather than create it (a mistyped `--doc` leaves nothing behind).
    Read,
    /// It writes or locks.
    Write,
}

/// Connects and syncs, with a spinner on a terminal while that is slow.
async fn open(addr: &str, access: Access, args: &ClientArgs) -> Result<Connection, Failure> {
    let receiving = format!("receiving document {:?} from {addr}...", args.doc);
    with_spinner(receiving, connect(addr, access, args)).await
}

/// Connects and syncs.
async fn connect(addr: &str, access: Access, args: &ClientArgs) -> Result<Connection, Failure> {
    let mut options = ConnectOptions::new(&args.doc)
        .read_only(access == Access::Read)
        .token(&args.token)
        .max_frame(args.max_frame)
        .timeouts(args.timeout(), args.timeout());
    if let Some(ca) = &args.tls_ca {
        let mut tls = TlsOptions::from_ca_file(ca)
            .map_err(|e| Failure(format!("cannot use --tls-ca: {e}")))?;
        if let Some(name) = &args.tls_name {
            tls = tls.server_name(name);
        }
        options = options.tls(tls);
    }
    net::connect(addr, &args.hostname, options)
        .await
        .map_err(|e| Failure(for_the_command_line(&e.to_string())))
}

/// A message of the library for this command's user: the option it
/// names is this command's `--max-frame`.
fn for_the_command_line(message: &str) -> String {
    message.replace("ConnectOptions::max_frame", "--max-frame")
}

/// Runs `work`, showing `message` with a spinner on stderr once it has
/// taken [`SPINNER_AFTER`], if stderr is a terminal.
async fn with_spinner<T>(message: String, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let mut work = std::pin::pin!(work);
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    tokio::select! {
        r = &mut work => return r,
        () = tokio::time::sleep(SPINNER_AFTER) => {}
    }
    let spinner = ProgressBar::new_spinner()
        .with_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        )
        .with_message(message)
        .with_elapsed(started.elapsed());
    spinner.enable_steady_tick(Duration::from_millis(100));
    let r = work.await;
    spinner.finish_and_clear();
    r
}

/// `v`, found at `at`, as JSON: an object met again (shared, or in a
/// cycle) is a `{"$ref": pointer}` to where it was first written.
pub(crate) fn to_json(v: &Value, at: &str) -> serde_json::Value {
    v.to_json_with_refs(at)
        .unwrap_or_else(|e| json!({ "$unprintable": e.to_string() }))
}

/// Writes a line to stdout; `Ok(false)` once its reader is gone (a pipe
/// closed by `head`), which ends the command as a success.
fn print_line(line: &dyn std::fmt::Display) -> Result<bool, Failure> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure(format!("cannot write to stdout: {e}"))),
    }
}

pub(crate) fn origin(o: &Origin) -> serde_json::Value {
    match o {
        Origin::Local => json!("local"),
        Origin::Remote(peer) => json!(peer.to_string()),
        other => json!(format!("{other:?}")),
    }
}

/// Leaves the document: waits (up to [`CLOSE_TIMEOUT`]) for the relay to
/// acknowledge what this node sent, then says goodbye. Every command
/// leaves so once connected, failing or not: a node that only drops its
/// connection stays a member for the relay's `--reconnect-grace`, and
/// every lock grant waits for it meanwhile. An interrupt meanwhile (a
/// second one for `watch`, which ends on the first) stops the wait: the
/// relay is out of reach, or the user does not want to wait for it.
async fn leave(conn: Connection) {
    let close = async {
        tracing::debug!("leaving the document");
        conn.close(CLOSE_TIMEOUT).await
    };
    tokio::select! {
        // Listening for the interrupt before the wait begins.
        biased;
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted while leaving the document"),
        closed = close => {
            if let Err(e) = closed {
                tracing::debug!(error = %e, "leaving the document");
            }
        }
    }
}

fn nothing_at(path: &str, doc: &str) -> Failure {
    Failure(format!(
        "nothing at {path:?} in document {doc:?}; `facsimile get ADDR` shows the whole document"
    ))
}

pub(crate) async fn get(
    addr: &str,
    path: &str,
    compact: bool,
    args: &ClientArgs,
) -> Result<(), Failure> {
    let conn = open(addr, Access::Read, args).await?;
    let printed = print_at(&conn, path, compact, args);
    leave(conn).await;
    printed
}

/// Prints what is at `path` for `get`.
fn print_at(
    conn: &Connection,
    path: &str,
    compact: bool,
    args: &ClientArgs,
) -> Result<(), Failure> {
    let value = conn
        .node()
        .get(path)
        .ok_or_else(|| nothing_at(path, &args.doc))?;
    let json = value
        .to_json_with_refs(path)
        .map_err(|e| Failure(format!("cannot print {path:?}: {e}")))?;
    let text = if compact {
        serde_json::to_string(&json)?
    } else {
        serde_json::to_string_pretty(&json)?
    };
    print_line(&text)?;
    Ok(())
}

pub(crate) async fn set(
    addr: &str,
    path: &str,
    json: &str,
    args: &ClientArgs,
) -> Result<(), Failure> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        Failure(format!(
            "the value is not JSON ({e}); strings need quotes, as in '\"text\"'"
        ))
    })?;
    let conn = open(addr, Access::Write, args).await?;
    let written = write_at(&conn, addr, path, value, args).await;
    leave(conn).await;
    written
}

/// Writes `value` at `path` for `set`, and waits for the relay to have it.
async fn write_at(
    conn: &Connection,
    addr: &str,
    path: &str,
    value: serde_json::Value,
    args: &ClientArgs,
) -> Result<(), Failure> {
    if path.starts_with('/') && conn.node().root() == Value::Null {
        return Err(empty_document(addr, path, &value, args));
    }
    let written = crate::notation::read(&value, path, conn.node()).map_err(Failure)?;
    written.write(conn.node(), path).map_err(|e| match e {
        // It names the path already.
        facsimile::Error::Path { .. } => Failure(e.to_string()),
        e => Failure(format!("cannot write at {path:?}: {e}")),
    })?;
    conn.flush()
        .await
        .map_err(|e| Failure(format!("the write was not acknowledged: {e}")))?;
    Ok(())
}

/// A write below the root of an empty document: it needs a root first.
/// Suggests the command that writes one holding `value` at `path` where
/// the path allows.
fn empty_document(addr: &str, path: &str, value: &serde_json::Value, args: &ClientArgs) -> Failure {
    let root = root_holding(path, value.clone())
        .and_then(|root| serde_json::to_string(&root).ok())
        .filter(|json| !json.contains('\''))
        .unwrap_or_else(|| "{}".into());
    let doc = if args.doc == "default" {
        String::new()
    } else {
        format!(" --doc {}", args.doc)
    };
    Failure(format!(
        "document {:?} is empty: write its root first, as in: facsimile set {addr}{doc} \"\" '{root}'",
        args.doc
    ))
}

/// The root that has `value` at `path`, building maps for keys and
/// one-element arrays for `0` or `-`; `None` for another index.
fn root_holding(path: &str, value: serde_json::Value) -> Option<serde_json::Value> {
    pointer::parse(path)?
        .iter()
        .rev()
        .try_fold(value, |inner, key| match key.as_str() {
            "0" | "-" => Some(json!([inner])),
            k if k.bytes().all(|b| b.is_ascii_digit()) => None,
            k => Some(json!({ k: inner })),
        })
}

pub(crate) async fn watch(
    addr: &str,
    path: &str,
    max_pending: usize,
    args: &ClientArgs,
) -> Result<(), Failure> {
    let conn = open(addr, Access::Read, args).await?;
    let watched = follow(&conn, path, max_pending).await;
    leave(conn).await;
    watched
}

/// Prints what is at `path`, then its changes, for `watch`.
async fn follow(conn: &Connection, path: &str, max_pending: usize) -> Result<(), Failure> {
    let mut watcher = Watcher::new(conn.node(), path, max_pending);
    // Listening for an interrupt before the first line: one that comes
    // after it ends the watch in order, with a goodbye.
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let early = std::future::poll_fn(|cx| Poll::Ready(interrupted.as_mut().poll(cx).is_ready()));
    if early.await {
        return Ok(());
    }
    let mut reading = print_line(&watcher.tree())?;
    let mut status = conn.status();
    let reader_gone = stdout_reader_gone();
    tokio::pin!(reader_gone);
    while reading {
        let line = tokio::select! {
            // The changes received before the connection stopped are
            // printed first.
            biased;
            l = watcher.next_line() => l,
            _ = &mut interrupted => break,
            () = &mut reader_gone => break,
            why = stopped_for_good(&mut status) => return Err(Failure(why)),
        };
        let Some(line) = line else { break };
        reading = print_line(&line)?;
    }
    Ok(())
}

/// Resolves once stdout's reader has gone (a pipe whose reading end is
/// closed, `| head` done; a terminal hung up), without writing to it: a
/// watch of a quiet document writes nothing that would fail and tell.
/// Never resolves where that cannot be known (a file, another system).
async fn stdout_reader_gone() {
    #[cfg(unix)]
    {
        let (gone, wait) = tokio::sync::oneshot::channel();
        // poll(2) on a thread of its own: stdout may be a file or a
        // terminal, which the runtime's reactor does not take, and no
        // interest but the errors (always reported) is asked for, so it
        // returns only once the reader has gone. The thread ends with
        // the process.
        let spawned = std::thread::Builder::new()
            .name("stdout-reader".into())
            .spawn(move || {
                use rustix::event::{PollFd, PollFlags, poll};
                use std::os::fd::AsFd;
                let stdout = std::io::stdout();
                let fd = stdout.as_fd();
                let mut fds = [PollFd::new(&fd, PollFlags::empty())];
                loop {
                    match poll(&mut fds, None) {
                        Ok(_) => break,
                        Err(rustix::io::Errno::INTR) => continue,
                        Err(_) => return,
                    }
                }
                if fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP) {
                    let _ = gone.send(());
                }
            });
        if spawned.is_ok() && wait.await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

/// Waits until the connection has stopped for good (no reconnection
/// follows), and says why.
async fn stopped_for_good(status: &mut tokio::sync::watch::Receiver<Status>) -> String {
    loop {
        if let Some(why) = stop_reason(&status.borrow_and_update()) {
            return why;
        }
        if status.changed().await.is_err() {
            return "the connection stopped".into();
        }
    }
}

/// Why a connection in this state stopped for good, for the user; `None`
/// while it is up or may come back.
fn stop_reason(status: &Status) -> Option<String> {
    match status {
        Status::Failed(why) => Some(format!(
            "the connection stopped: {}",
            for_the_command_line(why)
        )),
        Status::Refused(why) => Some(format!("the relay closed the connection: {why}")),
        Status::Closed => Some("the connection was closed".into()),
        // Up, or coming back.
        _ => None,
    }
}

pub(crate) async fn lock(
    addr: &str,
    path: &str,
    command: &[String],
    wait: Option<Duration>,
    grace: Duration,
    kill_grace: Duration,
    args: &ClientArgs,
) -> Result<u8, Failure> {
    let conn = open(addr, Access::Write, args).await?;
    let code = lock_and_run(&conn, path, command, wait, grace, kill_grace, args).await;
    // After the lock's guard is dropped: the goodbye follows its release.
    leave(conn).await;
    code
}

/// Takes the lock on `path` and runs `command` under it, for `lock`.
async fn lock_and_run(
    conn: &Connection,
    path: &str,
    command: &[String],
    wait: Option<Duration>,
    grace: Duration,
    kill_grace: Duration,
    args: &ClientArgs,
) -> Result<u8, Failure> {
    let node = conn.node().clone();
    let value = node.get(path).ok_or_else(|| nothing_at(path, &args.doc))?;
    let Some(object) = value.as_object() else {
        return Err(Failure(format!(
            "{path:?} holds {}, not a map or an array: locks are on objects; lock its parent",
            to_json(&value, path)
        )));
    };
    let lost = Arc::new(tokio::sync::Notify::new());
    let _on_lock = {
        let lost = lost.clone();
        let id = object.id();
        node.on_lock(move |e| {
            if matches!(e, LockEvent::Lost { object, .. } if *object == id) {
                lost.notify_one();
            }
        })
    };
    // `--wait 0` asks without queueing: refused when another node holds the
    // lock or waits for it, as the relay's log orders the requests.
    let fail_fast = wait == Some(Duration::ZERO);
    let acquire = async {
        let mut request = std::pin::pin!(if fail_fast {
            node.request(&object)
        } else {
            node.lock(&object)
        });
        // The first poll sends the request; once the relay has it, the
        // request holds its place in the lock's queue.
        if let Some(granted) = request.as_mut().now_or_never() {
            return granted;
        }
        if let Err(e) = conn.flush().await {
            tracing::debug!(error = %e, "the lock request was not acknowledged");
        }
        tracing::info!(path, "lock requested");
        request.await
    };
    // A request without waiting still needs the relay's answer: given up
    // after `--timeout` if the connection fails meanwhile.
    let wait = if fail_fast {
        Some(args.timeout())
    } else {
        wait
    };
    let guard = match wait {
        Some(secs) => tokio::time::timeout(secs, acquire).await.map_err(|_| {
            Failure(format!(
                "the lock on {path:?} was not granted within {}s ({})",
                secs.as_secs_f64(),
                if fail_fast {
                    "no answer from the relay in --timeout"
                } else {
                    "--wait"
                }
            ))
        })?,
        None => acquire.await,
    }
    .map_err(|e| Failure(format!("cannot lock {path:?}: {e}")))?;
    let token = guard.token();
    tracing::info!(path, token, "lock granted");
    // Signals that would end this process go to the command instead, and
    // the lock is released once it has exited: ended first, this process
    // would leave the command running without the lock.
    let mut signals = Signals::new()?;
    let spawned = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("FACSIMILE_LOCK_TOKEN", token.to_string())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            // A shell's statuses: 127 not found, 126 found but not run,
            // so that a script tells them from the command's own 1.
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            eprintln!("error: cannot run {:?}: {e}", command[0]);
            return Ok(code);
        }
    };
    // The relay may evict this node (its connection broke): the lock is
    // then someone else's, and the command must not go on believing it
    // holds it. Nor while the connection is down: by default the relay
    // evicts a node whose connection drops at once, and this node learns
    // of it only once it is back.
    let mut status = conn.status();
    let mut down_since = None;
    let mut check = tokio::time::interval(Duration::from_millis(200));
    // The command's status, or why it must be stopped.
    let ended = loop {
        if !matches!(*status.borrow_and_update(), Status::Connected) {
            down_since.get_or_insert_with(tokio::time::Instant::now);
        } else {
            down_since = None;
        }
        // A grace too long to add is no limit.
        let cut_off = down_since.and_then(|at: tokio::time::Instant| at.checked_add(grace));
        tokio::select! {
            s = child.wait() => break Ok(s.map_err(|e| Failure(format!("waiting for the command: {e}")))?),
            signal = signals.next() => {
                signals.forward(signal, &child);
                continue;
            }
            _ = lost.notified() => {}
            changed = status.changed() => {
                if changed.is_ok() {
                    continue;
                }
            }
            () = sleep_until(cut_off) => break Err(format!(
                "lost the connection to the relay while holding the lock on {path:?} \
                 (the relay may give it to another node)"
            )),
            _ = check.tick() => {
                if guard.is_held() {
                    continue;
                }
            }
        }
        if !guard.is_held() || status.has_changed().is_err() {
            break Err(format!(
                "lost the lock on {path:?} (this node was evicted by the relay)"
            ));
        }
    };
    let status = match ended {
        Ok(status) => status,
        Err(why) => {
            stop(&mut child, kill_grace).await;
            return Err(Failure(format!("{why}; the command was stopped")));
        }
    };
    drop(guard);
    Ok(exit_code(status))
}

/// Stops the command: SIGTERM, so that it may clean up, then SIGKILL if
/// it still runs after `grace` (at once when `grace` is zero).
async fn stop(child: &mut tokio::process::Child, grace: Duration) {
    #[cfg(unix)]
    if !grace.is_zero() {
        let pid = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32));
        if let Some(pid) = pid {
            tracing::info!(?grace, "stopping the command (SIGTERM)");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if tokio::time::timeout(grace, child.wait()).await.is_ok() {
                return;
            }
            tracing::warn!(?grace, "the command outlived its grace; killing it");
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Waits until `at`, or for ever without it.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The signals `facsimile lock` passes on to its command (SIGTERM, SIGINT,
/// SIGHUP), caught with where they came from for as long as this lives.
struct Signals {
    #[cfg(unix)]
    caught: signal_hook_tokio::SignalsInfo<signal_hook::iterator::exfiltrator::WithOrigin>,
}

/// A signal caught, and whether the kernel sent it (`None`: not known).
#[cfg(unix)]
type Caught = (rustix::process::Signal, Option<bool>);

impl Signals {
    fn new() -> Result<Signals, Failure> {
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            let caught = signal_hook_tokio::SignalsInfo::new([SIGTERM, SIGINT, SIGHUP])
                .map_err(|e| Failure(format!("cannot catch signals: {e}")))?;
            Ok(Signals { caught })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal caught.
    #[cfg(unix)]
    async fn next(&mut self) -> Caught {
        use futures_util::StreamExt;
        use signal_hook::low_level::siginfo::Cause;
        loop {
            let Some(origin) = self.caught.next().await else {
                return std::future::pending().await;
            };
            let Some(signal) = rustix::process::Signal::from_named_raw(origin.signal) else {
                continue;
            };
            let by_kernel = match origin.cause {
                Cause::Kernel => Some(true),
                Cause::Sent(_) => Some(false),
                _ => None,
            };
            return (signal, by_kernel);
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) {
        std::future::pending::<()>().await
    }

    /// Sends a signal caught on to the command, if it still runs, unless
    /// the command had it too: one the kernel sent (Ctrl-C, a terminal
    /// hanging up) goes to the whole foreground process group of the
    /// terminal, the command (which shares this process's group) with it,
    /// and a second interrupt makes many programs skip their orderly
    /// shutdown. One another process sent (`kill`) is for this process
    /// alone and is passed on. Where the system does not say who sent it,
    /// an interrupt while this process runs in the foreground of its
    /// terminal is taken for the terminal's.
    #[cfg(unix)]
    fn forward(&self, (signal, by_kernel): Caught, child: &tokio::process::Child) {
        let by_terminal =
            by_kernel.unwrap_or_else(|| signal == rustix::process::Signal::INT && in_foreground());
        if by_terminal {
            tracing::info!(?signal, "the command had the signal from the terminal too");
            return;
        }
        let pid = child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32));
        if let Some(pid) = pid {
            tracing::info!(?signal, "passing the signal on to the command");
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    #[cfg(not(unix))]
    fn forward(&self, _: (), _: &tokio::process::Child) {}
}

/// Whether this process is in the foreground process group of its
/// controlling terminal (none: not).
#[cfg(unix)]
fn in_foreground() -> bool {
    let Ok(tty) = std::fs::File::open("/dev/tty") else {
        return false;
    };
    rustix::termios::tcgetpgrp(&tty).is_ok_and(|group| group == rustix::process::getpgrp())
}

fn exit_code(status: std::process::ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return code.clamp(0, 255) as u8;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return (128 + sig).clamp(0, 255) as u8;
        }
    }
    1
}
