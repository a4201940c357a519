//! The `facsimile` command: run a relay, and read, write, watch and lock
//! the documents it serves.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod client;
mod demo;
mod notation;
mod serve;
mod watch;

/// Mirror an object graph across processes and machines.
///
/// Run a relay with `facsimile serve`, then connect nodes to it from code
/// (`facsimile::net::connect`) or from the shell with the commands below.
/// PATH arguments are JSON pointers into the document: `/config/name`,
/// `/items/0`; an omitted PATH (or "") is the whole document.
#[derive(Parser)]
#[command(
    name = "facsimile",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// More log output on stderr (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay: nodes connect to it, it orders, stores and passes on
    /// their messages, and serves the document to nodes that join.
    Serve(serve::ServeArgs),
    /// Show facsimile at work: a relay and several nodes in this process
    /// mirror a document, report changes, contend for a lock and welcome a
    /// late joiner. Ends by itself.
    Demo,
    /// Print the document (or the part at PATH) as JSON, then every change
    /// under PATH as a JSON line with its origin, until interrupted.
    Watch {
        /// The relay's address, HOST:PORT or ws://HOST:PORT/ (wss:// with
        /// --tls-ca), or a NATS server's, nats://HOST:PORT.
        addr: String,
        /// A JSON pointer into the document.
        #[arg(value_parser = pointer)]
        path: Option<String>,
        /// Changes held while stdout is not read; past them, the changes
        /// are dropped and the whole of PATH is printed again, as a line
        /// with "resync": true.
        #[arg(long, default_value_t = watch::DEFAULT_MAX_PENDING, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        max_pending: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the document (or the part at PATH) as JSON.
    Get {
        /// The relay's address, HOST:PORT or ws://HOST:PORT/ (wss:// with
        /// --tls-ca), or a NATS server's, nats://HOST:PORT.
        addr: String,
        /// A JSON pointer into the document.
        #[arg(value_parser = pointer)]
        path: Option<String>,
        /// One line instead of indented JSON.
        #[arg(long)]
        compact: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Write JSON at PATH (a map key, an array index, `-` to append, or ""
    /// for the root) and wait until the relay has it on disk.
    Set {
        /// The relay's address, HOST:PORT or ws://HOST:PORT/ (wss:// with
        /// --tls-ca), or a NATS server's, nats://HOST:PORT.
        addr: String,
        /// A JSON pointer; its parent must exist.
        #[arg(value_parser = pointer)]
        path: String,
        /// The value, as JSON: 3, "text" (quoted for the shell: '"text"'),
        /// {"a": [1, 2]}. Read as `get` writes it: {"$ref": POINTER} is a
        /// reference to the object at POINTER (under PATH: inside the
        /// value), and a key "$$ref" is stored as "$ref".
        json: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Hold the distributed lock on the object (map or array) at PATH while
    /// a command runs, then release it; exit with the command's status.
    /// The command sees the lock's fencing token in FACSIMILE_LOCK_TOKEN.
    /// If the lock is lost meanwhile (the relay evicted this node), or the
    /// connection to the relay is down for longer than --disconnect-grace,
    /// the command is stopped (--kill-grace) and the exit status is 1.
    /// SIGTERM, SIGINT and SIGHUP are passed on to the command; the lock
    /// is released once it has exited. Exit status: the command's (128+N
    /// when signal N ended it), 1 when the lock could not be taken or was
    /// lost, 126 when the command cannot be run, 127 when it is not found.
    Lock {
        /// The relay's address, HOST:PORT or ws://HOST:PORT/ (wss:// with
        /// --tls-ca), or a NATS server's, nats://HOST:PORT.
        addr: String,
        /// A JSON pointer to a map or an array ("" for the root).
        #[arg(value_parser = pointer)]
        path: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
        /// Give up if the lock is not granted within this many seconds;
        /// 0 gives up at once when another node holds the lock or waits
        /// for it.
        #[arg(long, value_name = "SECS", value_parser = secs)]
        wait: Option<Duration>,
        /// How long the command may run on while the connection is down.
        /// The relay gives the lock away once it evicts this node: at once
        /// when the connection drops, unless it was started with
        /// --reconnect-grace; keep this well below that grace.
        #[arg(long, value_name = "SECS", default_value = "0", value_parser = secs)]
        disconnect_grace: Duration,
        /// When the lock is lost, the command gets SIGTERM, then SIGKILL
        /// if it still runs this many seconds later (0: SIGKILL at once).
        /// Another node may hold the lock meanwhile.
        #[arg(long, value_name = "SECS", default_value = "5", value_parser = secs)]
        kill_grace: Duration,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the URL of the relay's live inspector for a document (its
    /// tree, changes, peers, locks and storage, in a browser). Opens
    /// nothing and connects to nothing.
    Inspect {
        /// The relay's address, HOST:PORT (or ws://HOST:PORT/, wss://,
        /// http:// or https://, as the relay serves all on one port).
        #[arg(value_parser = relay_web_addr)]
        addr: WebAddr,
        /// The document to inspect.
        #[arg(long, default_value = "default", value_name = "NAME", value_parser = document_name)]
        doc: String,
        /// The relay's shared token (it ends up in the URL).
        #[arg(long, env = "FACSIMILE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The relay serves TLS: an https:// URL (implied by wss:// and
        /// https:// addresses).
        #[arg(long)]
        tls: bool,
    },
}

/// A relay's address for a web browser: its host and port, and whether
/// the address named TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
struct WebAddr {
    host_port: String,
    tls: bool,
}

/// A relay's address from the command line, bare or with a scheme the
/// relay's port serves.
fn relay_web_addr(arg: &str) -> Result<WebAddr, String> {
    let (rest, tls) = match arg.split_once("://") {
        None => (arg, false),
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => (rest, false),
            "wss" | "https" => (rest, true),
            _ => {
                return Err(format!(
                    "{scheme}:// is not a relay's address: the inspector is served by a \
                     `facsimile serve` relay, at HOST:PORT"
                ));
            }
        },
    };
    let host_port = rest.strip_suffix('/').unwrap_or(rest);
    if host_port.is_empty()
        || host_port.contains(['/', '?', '#', '@'])
        || host_port.contains(char::is_whitespace)
    {
        return Err(format!("{arg:?} is not HOST:PORT"));
    }
    Ok(WebAddr {
        host_port: host_port.to_string(),
        tls,
    })
}

/// A document name the relay takes.
fn document_name(arg: &str) -> Result<String, String> {
    if facsimile_server::valid_name(arg) {
        Ok(arg.to_string())
    } else {
        Err(
            "a document name is 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'"
                .into(),
        )
    }
}

/// The inspector's URL for a document of the relay at `addr`.
fn inspector_url(addr: &WebAddr, doc: &str, token: Option<&str>, tls: bool) -> String {
    let scheme = if tls || addr.tls { "https" } else { "http" };
    let mut url = format!("{scheme}://{}/inspect/{}", addr.host_port, encode(doc));
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        url.push_str("?token=");
        url.push_str(&encode(t));
    }
    url
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// How a client command connects.
#[derive(Args, Clone)]
struct ClientArgs {
    /// The document to use.
    #[arg(long, default_value = "default", value_name = "NAME")]
    doc: String,
    /// The relay's shared token.
    #[arg(
        long,
        env = "FACSIMILE_TOKEN",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    token: String,
    /// Connect with TLS, trusting the certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The name the relay's TLS certificate must carry (default: the host
    /// of ADDR).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_name: Option<String>,
    /// This node's hostname (decides ties between concurrent writes and
    /// lock requests: the higher one wins).
    #[arg(long, default_value = "cli", value_name = "NAME")]
    hostname: String,
    /// Give up connecting, or receiving the document, after this many
    /// seconds.
    #[arg(long, default_value = "10", value_name = "SECS", value_parser = positive_secs)]
    timeout: Duration,
    /// The largest frame accepted from the relay, in bytes.
    #[arg(long, default_value_t = facsimile::net::protocol::DEFAULT_MAX_FRAME, value_name = "BYTES", value_parser = frame_bytes)]
    max_frame: usize,
}

impl ClientArgs {
    fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A JSON pointer from the command line (RFC 6901): empty, or `/` and
/// its segments, in which `~` is only `~0` or `~1`.
fn pointer(arg: &str) -> Result<String, String> {
    let tildes_ok = arg
        .split('~')
        .skip(1)
        .all(|after| after.starts_with(['0', '1']));
    if !(arg.is_empty() || arg.starts_with('/')) {
        return Err(format!(
            "{arg:?} is not a JSON pointer: it starts with '/' (\"/{arg}\"), or is \"\" for the whole document"
        ));
    }
    if !tildes_ok {
        return Err(format!(
            "{arg:?} is not a JSON pointer: '~' stands only in \"~0\" (for '~') and \"~1\" (for '/')"
        ));
    }
    Ok(arg.to_string())
}

/// The longest time taken on the command line, a hundred years: longer
/// would mean for ever, and a time past what the clock can add to now
/// (from about 1e19 seconds) would make the deadline overflow.
pub(crate) const MAX_SECS: u64 = 100 * 365 * 24 * 3600;

/// A number of seconds from the command line: finite, not negative and at
/// most [`MAX_SECS`].
pub(crate) fn secs(arg: &str) -> Result<Duration, String> {
    let n: f64 = arg
        .trim()
        .parse()
        .map_err(|_| format!("{arg:?} is not a number of seconds"))?;
    if n.is_nan() || n < 0.0 {
        return Err(format!("{arg} is not a number of seconds (0 or more)"));
    }
    if n > MAX_SECS as f64 {
        return Err(format!(
            "{arg} seconds is too long: at most {MAX_SECS} (a hundred years)"
        ));
    }
    Duration::try_from_secs_f64(n).map_err(|_| format!("{arg} seconds is too long"))
}

/// As [`secs`], and more than 0.
pub(crate) fn positive_secs(arg: &str) -> Result<Duration, String> {
    match secs(arg)? {
        d if d.is_zero() => Err(format!("{arg}: a time above 0 is needed")),
        d => Ok(d),
    }
}

/// The smallest frame limit taken: room for a hello (under 1,200 bytes
/// besides its token) and the welcome of an empty document. Any less and
/// every connection would be refused.
pub(crate) const MIN_FRAME: usize = 4096;

/// A frame limit from the command line: a number of bytes, at least
/// [`MIN_FRAME`].
pub(crate) fn frame_bytes(arg: &str) -> Result<usize, String> {
    let n: usize = arg
        .trim()
        .parse()
        .map_err(|_| format!("{arg:?} is not a number of bytes"))?;
    if n < MIN_FRAME {
        return Err(format!(
            "{n} bytes is too small: a frame must hold at least a hello and a welcome ({MIN_FRAME} or more)"
        ));
    }
    Ok(n)
}

/// An error for the user: what went wrong and what to do.
pub(crate) struct Failure(pub(crate) String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Inspect {
        addr,
        doc,
        token,
        tls,
    } = &cli.command
    {
        println!("{}", inspector_url(addr, doc, token.as_deref(), *tls));
        return ExitCode::SUCCESS;
    }
    let default_level = match (&cli.command, cli.verbose) {
        (_, 2..) => "debug",
        (_, 1) => "info",
        (Command::Serve(_), 0) => "info",
        (_, 0) => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await.map(|()| 0),
            Command::Demo => demo::run().await.map(|()| 0),
            Command::Watch {
                addr,
                path,
                max_pending,
                client,
            } => client::watch(&addr, path.as_deref().unwrap_or(""), max_pending, &client)
                .await
                .map(|()| 0),
            Command::Get {
                addr,
                path,
                compact,
                client,
            } => client::get(&addr, path.as_deref().unwrap_or(""), compact, &client)
                .await
                .map(|()| 0),
            Command::Set {
                addr,
                path,
                json,
                client,
            } => client::set(&addr, &path, &json, &client).await.map(|()| 0),
            Command::Lock {
                addr,
                path,
                command,
                wait,
                disconnect_grace,
                kill_grace,
                client,
            } => {
                client::lock(
                    &addr,
                    &path,
                    &command,
                    wait,
                    disconnect_grace,
                    kill_grace,
                    &client,
                )
                .await
            }
            Command::Inspect { .. } => Ok(0),
        }
    });
    // Background tasks (reconnection, timers) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(arg: &str) -> WebAddr {
        relay_web_addr(arg).unwrap()
    }

    #[test]
    fn the_inspector_url_names_the_document_and_carries_the_token_encoded() {
        assert_eq!(
            inspector_url(&addr("127.0.0.1:7878"), "default", Some("s3cret"), false),
            "http://127.0.0.1:7878/inspect/default?token=s3cret"
        );
        assert_eq!(
            inspector_url(&addr("relay:443"), "inv-2", Some("a b&c/d"), true),
            "https://relay:443/inspect/inv-2?token=a%20b%26c%2Fd"
        );
        assert_eq!(
            inspector_url(&addr("h:1"), "d", Some(""), false),
            "http://h:1/inspect/d"
        );
        assert_eq!(
            inspector_url(&addr("h:1"), "d", None, false),
            "http://h:1/inspect/d"
        );
    }
}
