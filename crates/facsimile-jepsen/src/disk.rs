//! Stalled and slow disks: a server's data lives on its own small ext4
//! image, loop-mounted under the run's directory.
//!
//! A stall freezes that file system (`fsfreeze -f`) for the hold. Every
//! write and `fsync` on it then blocks (the writer sleeps
//! uninterruptibly) until the thaw (`fsfreeze -u`). This stalls the whole
//! file system, not one `fsync`.
//!
//! A slow disk throttles the server's writes to the loop device with the
//! cgroup v1 blkio controller: the server's process is moved into a
//! cgroup of its own whose `blkio.throttle.write_bps_device` and
//! `write_iops_device` limit that device. Its writes and `fsync`s
//! complete, slowly. Only I/O the process submits itself is throttled:
//! its `fsync`s and direct writes, not the kernel's background writeback
//! of its dirty pages, nor the journal's commits (cgroup v1 charges those
//! to the root).
//!
//! Mount points and cgroups are named `fj` + the runner's pid in six hex
//! digits + `-disk-<name>`, so a run can thaw, unmount and release what a
//! crashed run left behind (its pid is gone), and [`Disk`] thaws,
//! unmounts and removes its own when dropped, also on panic. A frozen file
//! system must never outlive its hold: a process in it cannot even be
//! killed until the thaw; nor must a throttle outlive the run. So each
//! disk has a watchdog process that thaws it and releases its cgroup as
//! soon as the runner is gone, however it ended (`SIGKILL` too).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// Runs `program` with `args`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn run_path(program: &str, args: &[&str], path: &Path) -> io::Result<()> {
    let path = path
        .to_str()
        .ok_or_else(|| io::Error::other("a path not in UTF-8"))?;
    let mut all = args.to_vec();
    all.push(path);
    run(program, &all)
}

/// Whether disk stalls can be made here: `Ok` once a probe image was
/// formatted, mounted, frozen, thawed and unmounted (probed once per
/// process), else why not.
pub fn available() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            if !nix::unistd::geteuid().is_root() {
                return Err("not root".into());
            }
            let dir = std::env::temp_dir().join(format!(
                "fj{:06x}-disk-probe",
                std::process::id() & 0xff_ffff
            ));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let probe = Disk::new(&dir, "probe").and_then(|d| {
                d.freeze()?;
                d.thaw()
            });
            let _ = std::fs::remove_dir_all(&dir);
            probe.map_err(|e| format!("loop mount or fsfreeze failed: {e}"))
        })
        .clone()
}

/// Whether `name` (`fj00abcd-disk-relay`) is a disk of a run whose pid is
/// gone.
fn left_behind(name: &str) -> bool {
    name.starts_with("fj")
        && name.get(8..).is_some_and(|rest| rest.starts_with("-disk-"))
        && name.get(2..8).is_some_and(|pid| {
            u32::from_str_radix(pid, 16)
                .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
}

/// Thaws, unmounts and removes the images of runs whose pid is gone, and
/// releases their throttles.
pub fn remove_leftovers() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for line in mounts.lines() {
        // "/dev/loop3 /tmp/x/fj00abcd-disk-relay ext4 rw 0 0"; spaces in
        // the path are written `\040`, which such a run never creates.
        let Some(mnt) = line.split_whitespace().nth(1) else {
            continue;
        };
        let mnt = Path::new(mnt);
        if left_behind(mnt.file_name().and_then(|n| n.to_str()).unwrap_or("")) {
            release(mnt, &mnt.with_extension("img"));
        }
    }
    let Ok(cgroups) = std::fs::read_dir(BLKIO) else {
        return;
    };
    for cgroup in cgroups.flatten() {
        if left_behind(cgroup.file_name().to_str().unwrap_or("")) {
            // Its device is unknown (the image may be gone): the limits
            // go with the cgroup.
            unthrottle(&cgroup.path(), None);
        }
    }
}

/// Whether `mnt` is a mount point, by `/proc/mounts`.
fn mounted(mnt: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1).map(Path::new) == Some(mnt))
}

/// Thaws (harmless when not frozen), unmounts (lazily if busy) and removes
/// the mount point and the image.
fn release(mnt: &Path, image: &Path) {
    // Only a mount point: `fsfreeze` on a plain directory would act on the
    // file system that holds it.
    if mounted(mnt) {
        let _ = run_path("fsfreeze", &["-u"], mnt);
        if run_path("umount", &[], mnt).is_err() {
            let _ = run_path("umount", &["-l"], mnt);
        }
    }
    let _ = std::fs::remove_dir(mnt);
    let _ = std::fs::remove_file(image);
}

/// The cgroup v1 blkio hierarchy.
const BLKIO: &str = "/sys/fs/cgroup/blkio";

/// Whether slow disks can be made here: `Ok` once a probe process was
/// throttled on a probe disk and released (probed once per process), else
/// why not. Needs [`available`].
pub fn slow_available() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            available()?;
            let limits = Path::new(BLKIO).join("blkio.throttle.write_bps_device");
            if !limits.exists() {
                return Err(format!(
                    "no blkio throttling ({} missing)",
                    limits.display()
                ));
            }
            let dir = std::env::temp_dir().join(format!(
                "fj{:06x}-disk-slowprobe",
                std::process::id() & 0xff_ffff
            ));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let probe = Disk::new(&dir, "slowprobe").and_then(|d| {
                let mut cat = Command::new("cat").stdin(Stdio::piped()).spawn()?;
                let throttled = d.slow(cat.id(), 1 << 20, 100);
                let released = d.unslow();
                drop(cat.stdin.take());
                let _ = cat.wait();
                throttled.and(released)
            });
            let _ = std::fs::remove_dir_all(&dir);
            probe.map_err(|e| format!("blkio throttling failed: {e}"))
        })
        .clone()
}

/// Lifts `cgroup`'s write limits on `device` (`MAJ:MIN`, when known),
/// which lets the writes it holds back go at once, moves its processes
/// back to the root and removes it. Harmless when it does not exist.
fn unthrottle(cgroup: &Path, device: Option<&str>) {
    if let Some(device) = device {
        for limit in ["write_bps_device", "write_iops_device"] {
            let file = cgroup.join(format!("blkio.throttle.{limit}"));
            let _ = std::fs::write(file, format!("{device} 0"));
        }
    }
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines() {
        // One pid a write; a process gone meanwhile fails, harmlessly.
        let _ = std::fs::write(Path::new(BLKIO).join("cgroup.procs"), pid);
    }
    let _ = std::fs::remove_dir(cgroup);
}

/// A loop-mounted ext4 image; thawed, unmounted and removed, and its
/// throttle released, when dropped.
#[derive(Debug)]
pub struct Disk {
    mnt: PathBuf,
    image: PathBuf,
    /// The blkio cgroup that throttles a process's writes to this disk
    /// while it is slow.
    cgroup: PathBuf,
    /// Thaws the disk and releases its cgroup once its stdin, a pipe only
    /// this process holds, closes: the kernel closes it however this
    /// process ends.
    watchdog: Option<Child>,
}

/// What a disk's watchdog runs once its stdin closes, with the mount
/// point as `$0` and the cgroup as `$1`: [`release`]'s thaw and
/// [`unthrottle`] (without the limits, which go with the cgroup).
const WATCHDOG: &str = "cat >/dev/null; fsfreeze -u \"$0\"; \
    if [ -d \"$1\" ]; then \
    while read -r p; do echo \"$p\" >/sys/fs/cgroup/blkio/cgroup.procs; done <\"$1/cgroup.procs\"; \
    rmdir \"$1\"; fi";

/// Starts a disk's watchdog, in a session of its own so that a signal to
/// the runner's process group spares it.
fn watchdog(mnt: &str, cgroup: &str) -> io::Result<Child> {
    Command::new("setsid")
        .args(["sh", "-c", WATCHDOG, mnt, cgroup])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// I/O that went through a throttle: `blkio.throttle.io_serviced` and
/// `io_service_bytes` of its cgroup, writes to its device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttled {
    /// Write requests.
    pub writes: u64,
    /// Bytes written.
    pub bytes: u64,
}

impl Disk {
    /// Creates a 512 MiB sparse image in `dir` (which must exist), formats
    /// it and mounts it on a directory next to it.
    pub fn new(dir: &Path, name: &str) -> io::Result<Disk> {
        let pid = std::process::id() & 0xff_ffff;
        Disk::named(dir, &format!("fj{pid:06x}-disk-{name}"))
    }

    fn named(dir: &Path, base: &str) -> io::Result<Disk> {
        // Absolute and without symbolic links, as `/proc/mounts` has it.
        let dir = std::fs::canonicalize(dir)?;
        let mut disk = Disk {
            mnt: dir.join(base),
            image: dir.join(format!("{base}.img")),
            cgroup: Path::new(BLKIO).join(base),
            watchdog: None,
        };
        std::fs::File::create(&disk.image)?.set_len(512 << 20)?;
        std::fs::create_dir_all(&disk.mnt)?;
        // From here on, dropping `disk` cleans up whatever was made.
        run_path("mkfs.ext4", &["-q", "-F"], &disk.image)?;
        let (image, mnt) = (disk.image.to_str(), disk.mnt.to_str());
        let (Some(image), Some(mnt)) = (image, mnt) else {
            return Err(io::Error::other("a path not in UTF-8"));
        };
        run("mount", &["-o", "loop", image, mnt])?;
        let cgroup = disk.cgroup.to_str().unwrap_or_default();
        disk.watchdog = Some(watchdog(mnt, cgroup)?);
        Ok(disk)
    }

    /// The mounted file system's root.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Freezes the file system: writes and syncs on it block until
    /// [`Disk::thaw`].
    pub fn freeze(&self) -> io::Result<()> {
        run_path("fsfreeze", &["-f"], &self.mnt)
    }

    /// Thaws the file system.
    pub fn thaw(&self) -> io::Result<()> {
        run_path("fsfreeze", &["-u"], &self.mnt)
    }

    /// The loop device under the file system, as `MAJ:MIN`.
    fn device(&self) -> io::Result<String> {
        let dev = std::fs::metadata(&self.mnt)?.dev();
        Ok(format!(
            "{}:{}",
            nix::sys::stat::major(dev),
            nix::sys::stat::minor(dev)
        ))
    }

    /// Throttles process `pid`'s writes to this disk to `bps` bytes and
    /// `iops` requests a second, until [`Disk::unslow`]. The whole process
    /// moves (every thread); a process it starts later inherits the
    /// throttle, one started by anyone else, such as a restart of a killed
    /// server by the runner, does not.
    pub fn slow(&self, pid: u32, bps: u64, iops: u32) -> io::Result<()> {
        let device = self.device()?;
        let write = |file: &str, value: String| {
            std::fs::write(self.cgroup.join(file), value)
                .map_err(|e| io::Error::new(e.kind(), format!("{file}: {e}")))
        };
        if let Err(e) = std::fs::create_dir(&self.cgroup)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return Err(e);
        }
        let throttled = write("blkio.throttle.write_bps_device", format!("{device} {bps}"))
            .and_then(|()| {
                write(
                    "blkio.throttle.write_iops_device",
                    format!("{device} {iops}"),
                )
            })
            .and_then(|()| write("cgroup.procs", pid.to_string()));
        if throttled.is_err() {
            unthrottle(&self.cgroup, Some(&device));
        }
        throttled
    }

    /// What went through the throttle since [`Disk::slow`]; zero when the
    /// disk is not slow.
    pub fn throttled(&self) -> Throttled {
        let Ok(device) = self.device() else {
            return Throttled::default();
        };
        // Lines such as "7:3 Write 24576"; one per device and direction.
        let read = |file: &str| {
            let text = std::fs::read_to_string(self.cgroup.join(file)).unwrap_or_default();
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    let hit = f.next() == Some(&device) && f.next() == Some("Write");
                    hit.then(|| f.next()?.parse::<u64>().ok()).flatten()
                })
                .sum()
        };
        Throttled {
            writes: read("blkio.throttle.io_serviced"),
            bytes: read("blkio.throttle.io_service_bytes"),
        }
    }

    /// Lifts the throttle: writes held back go at once, the processes in
    /// it go back to the root cgroup (a killed one is simply gone), and the
    /// cgroup is removed.
    pub fn unslow(&self) -> io::Result<()> {
        let device = self.device().ok();
        unthrottle(&self.cgroup, device.as_deref());
        if self.cgroup.exists() {
            return Err(io::Error::other(format!(
                "{} could not be removed",
                self.cgroup.display()
            )));
        }
        Ok(())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Before the unmount, while the device is known.
        let _ = self.unslow();
        release(&self.mnt, &self.image);
        // Its thaw of a path no longer mounted fails, harmlessly.
        if let Some(mut w) = self.watchdog.take() {
            drop(w.stdin.take());
            let _ = w.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Writes and syncs `file` on a thread of its own, which says when it
    /// is done.
    fn write_and_sync(file: PathBuf) -> (std::thread::JoinHandle<()>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::create(file).unwrap();
            f.write_all(b"x").unwrap();
            f.sync_all().unwrap();
            tx.send(()).unwrap();
        });
        (writer, rx)
    }

    #[test]
    fn a_frozen_disk_holds_a_sync_until_thawed_and_is_removed_with_its_guard() {
        if let Err(why) = available() {
            eprintln!("disk stalls unavailable ({why}): nothing to test");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path(), "t").unwrap();
        let file = disk.path().join("f");
        disk.freeze().unwrap();
        let (writer, rx) = write_and_sync(file);
        // A bounded wait only shows that the write did not finish yet; it
        // asserts no duration.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        disk.thaw().unwrap();
        rx.recv().unwrap();
        writer.join().unwrap();
        let mnt = disk.path().to_path_buf();
        drop(disk);
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        assert!(
            !mounts.contains(mnt.to_str().unwrap()),
            "{mnt:?} still mounted"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_frozen_disk_left_by_a_dead_run_is_thawed_and_removed() {
        if available().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Above any pid_max: a run that is gone.
        let disk = Disk::named(dir.path(), "fjfffffe-disk-t3").unwrap();
        disk.freeze().unwrap();
        let mnt = disk.path().to_path_buf();
        std::mem::forget(disk);
        assert!(mounted(&mnt));
        remove_leftovers();
        assert!(!mounted(&mnt), "{mnt:?} still mounted");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_frozen_disk_is_thawed_once_its_runner_is_gone() {
        if available().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut disk = Disk::new(dir.path(), "t4").unwrap();
        let file = disk.path().join("f");
        disk.freeze().unwrap();
        let (writer, rx) = write_and_sync(file);
        // What the kernel does when the runner dies: the watchdog's pipe
        // closes, with no thaw by the runner.
        let mut watchdog = disk.watchdog.take().unwrap();
        drop(watchdog.stdin.take());
        watchdog.wait().unwrap();
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the write goes through once the watchdog thawed the disk");
        writer.join().unwrap();
    }

    #[test]
    fn dropping_a_frozen_disk_thaws_and_unmounts_it() {
        if available().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path(), "t2").unwrap();
        disk.freeze().unwrap();
        let mnt = disk.path().to_str().unwrap().to_string();
        drop(disk);
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        assert!(!mounts.contains(&mnt), "{mnt} still mounted");
    }

    /// A process that, for each line on its stdin naming a file, writes
    /// 64 KiB to it, `fsync`s it and says `done`: a server's writes.
    struct Writer {
        child: Child,
        stdin: std::process::ChildStdin,
        stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    }

    impl Writer {
        fn start() -> Writer {
            let script = "while read -r f; do \
                dd if=/dev/zero of=\"$f\" bs=4k count=16 conv=fsync 2>/dev/null && echo done; done";
            let mut child = Command::new("sh")
                .args(["-c", script])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdin = child.stdin.take().unwrap();
            let stdout = child.stdout.take().unwrap();
            use std::io::BufRead;
            Writer {
                child,
                stdin,
                stdout: std::io::BufReader::new(stdout).lines(),
            }
        }

        fn pid(&self) -> u32 {
            self.child.id()
        }

        /// Writes and syncs `file`, returning once the process did.
        fn write(&mut self, file: &Path) {
            writeln!(self.stdin, "{}", file.display()).unwrap();
            assert_eq!(self.stdout.next().unwrap().unwrap(), "done");
        }
    }

    impl Drop for Writer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The blkio cgroup of process `pid`, as `/proc/PID/cgroup` has it.
    fn blkio_cgroup(pid: u32) -> String {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        text.lines()
            .find_map(|l| l.split_once(":blkio:").map(|(_, path)| path.to_string()))
            .unwrap()
    }

    #[test]
    fn a_slow_disk_completes_synced_writes_through_its_throttle_and_lifts_it() {
        if let Err(why) = slow_available() {
            eprintln!("slow disks unavailable ({why}): nothing to test");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path(), "t6").unwrap();
        let mut writer = Writer::start();
        writer.write(&disk.path().join("before"));
        assert_eq!(disk.throttled(), Throttled::default());
        disk.slow(writer.pid(), 256 << 10, 20).unwrap();
        let name = disk.cgroup.file_name().unwrap().to_str().unwrap();
        assert_eq!(blkio_cgroup(writer.pid()), format!("/{name}"));
        writer.write(&disk.path().join("slow"));
        // The data the `fsync` wrote went through the throttle: at least
        // the 64 KiB, in at least one request.
        let t = disk.throttled();
        assert!(t.writes >= 1 && t.bytes >= 64 << 10, "{t:?}");
        disk.unslow().unwrap();
        assert!(!disk.cgroup.exists());
        assert_eq!(blkio_cgroup(writer.pid()), "/");
        assert_eq!(disk.throttled(), Throttled::default());
        writer.write(&disk.path().join("after"));
        let len = std::fs::metadata(disk.path().join("slow")).unwrap().len();
        assert_eq!(len, 64 << 10);
    }

    #[test]
    fn a_restart_of_a_throttled_process_is_not_throttled() {
        if slow_available().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path(), "t7").unwrap();
        let killed = Writer::start();
        disk.slow(killed.pid(), 256 << 10, 20).unwrap();
        drop(killed);
        // What the runner does after a kill: a new process, started by it.
        let mut restarted = Writer::start();
        assert_eq!(blkio_cgroup(restarted.pid()), "/");
        restarted.write(&disk.path().join("f"));
        assert_eq!(disk.throttled().writes, 0);
        // The throttle's cgroup is empty, and goes.
        disk.unslow().unwrap();
        assert!(!disk.cgroup.exists());
    }

    #[test]
    fn dropping_a_slow_disk_lifts_its_throttle() {
        if slow_available().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path(), "t8").unwrap();
        let writer = Writer::start();
        disk.slow(writer.pid(), 64 << 10, 10).unwrap();
        let cgroup = disk.cgroup.clone();
        drop(disk);
        assert!(!cgroup.exists());
        assert_eq!(blkio_cgroup(writer.pid()), "/");
    }

    #[test]
    fn a_slow_disk_left_by_a_dead_run_is_released() {
        if slow_available().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Above any pid_max: a run that is gone.
        let disk = Disk::named(dir.path(), "fjfffffe-disk-t9").unwrap();
        let writer = Writer::start();
        disk.slow(writer.pid(), 64 << 10, 10).unwrap();
        let (cgroup, mnt) = (disk.cgroup.clone(), disk.path().to_path_buf());
        std::mem::forget(disk);
        remove_leftovers();
        assert!(!cgroup.exists());
        assert_eq!(blkio_cgroup(writer.pid()), "/");
        assert!(!mounted(&mnt), "{mnt:?} still mounted");
    }

    #[test]
    fn a_slow_disk_is_released_once_its_runner_is_gone() {
        if slow_available().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut disk = Disk::new(dir.path(), "t10").unwrap();
        let writer = Writer::start();
        disk.slow(writer.pid(), 64 << 10, 10).unwrap();
        // The runner's end, as the kernel sees it: the pipe closes.
        let mut watchdog = disk.watchdog.take().unwrap();
        drop(watchdog.stdin.take());
        watchdog.wait().unwrap();
        assert!(!disk.cgroup.exists());
        assert_eq!(blkio_cgroup(writer.pid()), "/");
    }
}
