//! The system under test: the relay (`facsimile serve`) or a three-server
//! NATS JetStream cluster, as child processes that the nemesis can kill
//! with `SIGKILL` and restart on the same data.
//!
//! Every process a runner starts (servers and clients) carries the
//! runner's pid in [`RUNNER_ENV`] and dies with the runner: each sets its
//! parent-death signal to `SIGKILL` ([`die_with_runner`]), the servers
//! through [`guard`] (`facsimile-jepsen guard -- program…`), which sets it
//! and then executes the server. A runner killed so abruptly that even
//! that failed leaves processes that the next run's
//! [`kill_orphans`] recognises by the variable.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The environment variable holding the pid of the runner that started a
/// process.
pub const RUNNER_ENV: &str = "FACSIMILE_JEPSEN_RUNNER";

/// In a process the runner started: asks the kernel for `SIGKILL` when the
/// runner dies, and exits at once if it already has (it died before the
/// request). Nothing to do in a process started otherwise.
///
/// The kernel sends the signal when the thread that started the process
/// exits: the runner starts its processes from its main thread, which
/// lives as long as the runner.
pub fn die_with_runner() {
    let Some(runner) = std::env::var(RUNNER_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
        || nix::unistd::getppid().as_raw() != runner
    {
        std::process::exit(1);
    }
}

/// `facsimile-jepsen guard -- program args…`: [`die_with_runner`], then
/// executes `program` in this process (its pid stays, so the runner's
/// signals reach it). Returns only when it could not be executed.
pub fn guard(command: &[std::ffi::OsString]) -> String {
    use std::os::unix::process::CommandExt;
    die_with_runner();
    let Some((program, args)) = command.split_first() else {
        return "guard: no program to run".to_string();
    };
    let e = std::process::Command::new(program).args(args).exec();
    format!("guard: executing {}: {e}", Path::new(program).display())
}

/// A command that runs `program` as a child of this runner: guarded by
/// `guard_exe` (`facsimile-jepsen guard`) when given, which makes it die
/// with the runner.
pub fn runner_child(guard_exe: Option<&Path>, program: &Path) -> Command {
    let mut c = match guard_exe {
        Some(g) => {
            let mut c = Command::new(g);
            c.arg("guard").arg("--").arg(program);
            c
        }
        None => Command::new(program),
    };
    c.env(RUNNER_ENV, std::process::id().to_string());
    c
}

/// Kills (`SIGKILL`) the processes whose runner, named by [`RUNNER_ENV`] in
/// their environment, is gone: servers and clients a runner left behind
/// when it was killed before it could clean up. Returns how many.
pub fn kill_orphans() -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let prefix = format!("{RUNNER_ENV}=");
    let mut killed = 0;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Another user's process, or one gone meanwhile: not ours.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let runner = environ
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(prefix.as_bytes()))
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u32>().ok());
        let Some(runner) = runner else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{runner}")).exists();
        if !alive && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// The relay's failure detection, in seconds: a node not heard from for
/// this long is evicted and its locks pass on.
pub const RELAY_PEER_TIMEOUT: u64 = 3;

/// Which system the clients write to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One relay, `facsimile serve`.
    Relay,
    /// Three NATS servers with JetStream, streams replicated three times.
    Nats,
}

/// One server process and how to start it again.
pub struct Server {
    /// Its name (`relay`, `n0`…).
    pub name: String,
    /// Its network namespace, if it runs in one.
    pub ns: Option<String>,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The NATS monitoring port.
    pub monitor: Option<SocketAddr>,
    /// The `facsimile-jepsen` binary that starts the server guarded (see
    /// [`runner_child`]).
    pub guard: Option<PathBuf>,
}

impl Server {
    /// Starts the process and waits until its port accepts connections.
    pub async fn start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let guard = self.guard.as_deref();
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = runner_child(guard, Path::new("ip"));
                c.args(["netns", "exec", ns]).arg(&self.program);
                c
            }
            None => runner_child(guard, &self.program),
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(
            cmd.spawn()
                .map_err(|e| format!("starting {}: {e}", self.program.display()))?,
        );
        wait_for_port(self.addr, Duration::from_secs(30))
            .await
            .map_err(|()| {
                format!(
                    "{} did not listen on {} in time (log: {})",
                    self.name,
                    self.addr,
                    self.log.display()
                )
            })
    }

    /// Kills the process with `SIGKILL` and reaps it.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Kills the process with `SIGKILL` and waits for its end, without a
    /// runtime (a runner's cleanup when dropped).
    pub fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            if let Some(pid) = c.id() {
                let _ = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None);
            }
        }
    }

    /// The running process's pid (`ip netns exec` execs the server, so it
    /// is the server's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process is running (as far as the runner knows).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// Polls until a TCP connection to `addr` succeeds.
async fn wait_for_port(addr: SocketAddr, patience: Duration) -> Result<(), ()> {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(())
}

/// A free port on `ip` (picked by the kernel, released at once).
pub fn free_port(ip: Ipv4Addr) -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((ip, 0))?.local_addr()?.port())
}

/// The relay, listening on `ip`, storing in `data`, logging in `dir`.
pub fn relay(program: PathBuf, ip: Ipv4Addr, dir: &Path, data: &Path) -> std::io::Result<Server> {
    let addr = SocketAddr::from((ip, free_port(ip)?));
    Ok(Server {
        name: "relay".into(),
        ns: None,
        program,
        args: vec![
            "serve".into(),
            "--listen".into(),
            addr.to_string(),
            "--data".into(),
            data.display().to_string(),
            "--peer-timeout".into(),
            RELAY_PEER_TIMEOUT.to_string(),
        ],
        log: dir.join("relay.log"),
        child: None,
        addr,
        monitor: None,
        guard: None,
    })
}

/// Three NATS servers; server `i` listens on `ips[i]`, runs in
/// `namespaces[i]` if given and keeps its JetStream store in `stores[i]`;
/// configurations and logs go to `dir`. Ports are fixed when every server
/// has its own address, else picked free on the shared one. With
/// `sync_always` each server `fsync`s every write to its store
/// (`sync_interval: always`) instead of every 2 minutes, NATS's default.
pub fn nats(
    program: PathBuf,
    ips: [Ipv4Addr; 3],
    namespaces: [Option<String>; 3],
    dir: &Path,
    stores: &[PathBuf; 3],
    sync_always: bool,
) -> std::io::Result<Vec<Server>> {
    let own = ips[0] != ips[1];
    let port = |ip: Ipv4Addr, fixed: u16| if own { Ok(fixed) } else { free_port(ip) };
    let mut ports = Vec::new();
    for ip in ips {
        ports.push((port(ip, 4222)?, port(ip, 6222)?, port(ip, 8222)?));
    }
    let mut servers = Vec::new();
    for (i, ns) in namespaces.into_iter().enumerate() {
        let (client, route, http) = ports[i];
        let routes: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("nats-route://{}:{}", ips[j], ports[j].1))
            .collect();
        let conf = format!(
            "server_name: n{i}\nlisten: {ip}:{client}\nhttp: {ip}:{http}\n\
             jetstream {{ store_dir: \"{store}\", max_memory_store: 64MB, max_file_store: 256MB{sync} }}\n\
             cluster {{ name: jepsen, listen: {ip}:{route}, no_advertise: true, routes: [{routes}] }}\n",
            ip = ips[i],
            store = stores[i].display(),
            sync = if sync_always {
                ", sync_interval: always"
            } else {
                ""
            },
            routes = routes.join(", "),
        );
        let path = dir.join(format!("n{i}.conf"));
        std::fs::write(&path, conf)?;
        servers.push(Server {
            name: format!("n{i}"),
            ns,
            program: program.clone(),
            args: vec!["-c".into(), path.display().to_string()],
            log: dir.join(format!("n{i}.log")),
            child: None,
            addr: SocketAddr::from((ips[i], client)),
            monitor: Some(SocketAddr::from((ips[i], http))),
            guard: None,
        });
    }
    Ok(servers)
}

/// The name of the server that leads the document's stream, asked of the
/// monitoring port of each running server (`/jsz`).
pub fn stream_leader(servers: &[Server]) -> Option<String> {
    servers
        .iter()
        .filter(|s| s.running())
        .filter_map(|s| s.monitor)
        .find_map(|m| leader_from(&http_get(m, "/jsz?accounts=true&streams=true")?))
}

fn leader_from(body: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    let accounts = json.get("account_details")?.as_array()?;
    accounts
        .iter()
        .filter_map(|a| a.get("stream_detail")?.as_array())
        .flatten()
        .filter(|s| {
            let name = s.get("name").and_then(|n| n.as_str()).unwrap_or("");
            !name.starts_with("KV_") && !name.starts_with("OBJ_")
        })
        .find_map(|s| Some(s.get("cluster")?.get("leader")?.as_str()?.to_string()))
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_stream_leader_is_read_from_jsz() {
        let body = r#"{"account_details":[{"name":"$G","stream_detail":[
            {"name":"KV_facsimile","cluster":{"leader":"n0"}},
            {"name":"facsimile_jepsen","cluster":{"leader":"n2"}}]}]}"#;
        assert_eq!(leader_from(body).as_deref(), Some("n2"));
        assert_eq!(leader_from("{}"), None);
    }
}
