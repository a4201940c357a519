//! Network namespaces for partitions: every partitionable process (a
//! client, a NATS server) runs in its own namespace, linked by a veth pair
//! to a bridge in the host namespace that carries the run's private /24;
//! the bridge holds the host's address there, where the relay and the
//! fenced storage listen. A partition sets a veth's host end down, which
//! cuts that process off from everyone without closing its sockets.
//!
//! Every name starts with `fj` and the runner's pid in six hex digits, so
//! a run can remove what a crashed run left behind (its pid is gone), and
//! [`Net`] removes its own when dropped, also on panic.

use std::io;
use std::net::Ipv4Addr;
use std::process::Command;

/// The run's bridge, namespaces and links; removed when dropped.
pub struct Net {
    prefix: String,
    subnet: u8,
    namespaces: Vec<String>,
}

/// Runs `ip` with `args`, failing with its stderr.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether namespaces can be used here: `ip` runs and we are root.
pub fn available() -> bool {
    nix::unistd::geteuid().is_root() && ip(&["netns", "list"]).is_ok()
}

/// Removes namespaces and links whose run (the pid in their name) is gone.
pub fn remove_leftovers() {
    let dead = |name: &str| -> bool {
        name.len() > 8
            && name.starts_with("fj")
            && u32::from_str_radix(&name[2..8], 16)
                .is_ok_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    for line in ip_output(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if dead(name) {
            let _ = ip(&["netns", "del", name]);
        }
    }
    for line in ip_output(&["-o", "link", "show"]).lines() {
        // "12: fj00abcdbr: <...>" or "13: fj00abcdc1@if12: <...>"
        let name = line
            .split(':')
            .nth(1)
            .map(|n| n.trim().split('@').next().unwrap_or(""))
            .unwrap_or("");
        if dead(name) {
            let _ = ip(&["link", "del", name]);
        }
    }
}

impl Net {
    /// Creates the run's bridge.
    pub fn new() -> io::Result<Net> {
        let pid = std::process::id();
        // A /24 no other run's bridge holds: two runs on one /24 would
        // each route the other's addresses to its own bridge.
        let held = ip_output(&["-o", "-4", "addr", "show"]);
        let subnet = (0..250)
            .map(|k| ((pid + k) % 250) as u8)
            .find(|s| !held.contains(&format!(" 10.77.{s}.254/")))
            .ok_or_else(|| io::Error::other("every /24 of 10.77.0.0/16 is in use"))?;
        let net = Net {
            prefix: format!("fj{:06x}", pid & 0xff_ffff),
            subnet,
            namespaces: Vec::new(),
        };
        let br = net.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", net.host()), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// The host's address on the bridge.
    pub fn host(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 254)
    }

    /// The address of the namespace numbered `n` (1 to 253).
    pub fn addr(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, n)
    }

    /// The full name of namespace `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Creates namespace `name` with address `addr(n)`, linked to the bridge.
    pub fn add(&mut self, name: &str, n: u8) -> io::Result<String> {
        let ns = self.ns(name);
        let (host_end, ns_end) = (ns.clone(), format!("{ns}p"));
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
        ])?;
        ip(&["link", "set", &ns_end, "netns", &ns])?;
        ip(&["link", "set", &host_end, "master", &self.bridge()])?;
        ip(&["link", "set", &host_end, "up"])?;
        let cidr = format!("{}/24", self.addr(n));
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", &ns_end])?;
        ip(&["-n", &ns, "link", "set", &ns_end, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Cuts (`false`) or restores (`true`) namespace `name`'s link.
    pub fn set_link(&self, name: &str, up: bool) -> io::Result<()> {
        ip(&[
            "link",
            "set",
            &self.ns(name),
            if up { "up" } else { "down" },
        ])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = ip(&["link", "del", ns]);
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> String {
        ip_output(&["netns", "list"]) + &ip_output(&["-o", "link", "show"])
    }

    #[test]
    fn a_namespace_is_created_cut_and_removed_with_its_guard() {
        if !available() {
            eprintln!("network namespaces unavailable (not root or no `ip`): nothing to test");
            return;
        }
        let mut net = Net::new().unwrap();
        let ns = net.add("t1", 1).unwrap();
        assert!(names().contains(&ns));
        // The namespace reaches the host across the bridge, and not once cut.
        let listener = std::net::TcpListener::bind((net.host(), 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = |timeout: &str| {
            Command::new("ip")
                .args(["netns", "exec", &ns, "timeout", timeout, "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/{}/{port}", net.host()))
                .status()
                .unwrap()
                .success()
        };
        assert!(probe("5"));
        net.set_link("t1", false).unwrap();
        assert!(!probe("1"));
        net.set_link("t1", true).unwrap();
        drop(net);
        assert!(!names().contains(&ns), "{ns} left behind");
    }
}
