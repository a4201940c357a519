//! Stalled disks: a server's data lives on its own small ext4 image,
//! loop-mounted under the run's directory, and a stall freezes that file
//! system (`fsfreeze -f`) for the hold. Every write and `fsync` on it then
//! blocks (the writer sleeps uninterruptibly) until the thaw
//! (`fsfreeze -u`). This stalls the whole file system, not one `fsync`.
//!
//! Mount points are named `fj` + the runner's pid in six hex digits +
//! `-disk-<name>`, so a run can thaw and unmount what a crashed run left
//! behind (its pid is gone), and [`Disk`] thaws, unmounts and removes its
//! own when dropped, also on panic. A frozen file system must never
//! outlive its hold: a process in it cannot even be killed until the thaw.
//! So each disk has a watchdog process that thaws it as soon as the runner
//! is gone, however it ended (`SIGKILL` too).

use std::io;
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

/// Thaws, unmounts and removes the images of runs whose pid is gone.
pub fn remove_leftovers() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for line in mounts.lines() {
        // "/dev/loop3 /tmp/x/fj00abcd-disk-relay ext4 rw 0 0"; spaces in
        // the path are written `\040`, which such a run never creates.
        let Some(mnt) = line.split_whitespace().nth(1) else {
            continue;
        };
        let mnt = Path::new(mnt);
        let name = mnt.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let dead = name.starts_with("fj")
            && name.get(8..).is_some_and(|rest| rest.starts_with("-disk-"))
            && name.get(2..8).is_some_and(|pid| {
                u32::from_str_radix(pid, 16)
                    .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            });
        if dead {
            release(mnt, &mnt.with_extension("img"));
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

/// A loop-mounted ext4 image; thawed, unmounted and removed when dropped.
#[derive(Debug)]
pub struct Disk {
    mnt: PathBuf,
    image: PathBuf,
    /// Thaws the disk once its stdin, a pipe only this process holds,
    /// closes: the kernel closes it however this process ends.
    watchdog: Option<Child>,
}

/// Starts a disk's watchdog, in a session of its own so that a signal to
/// the runner's process group spares it.
fn watchdog(mnt: &str) -> io::Result<Child> {
    Command::new("setsid")
        .args(["sh", "-c", "cat >/dev/null; exec fsfreeze -u \"$0\"", mnt])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
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
        disk.watchdog = Some(watchdog(mnt)?);
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
}

impl Drop for Disk {
    fn drop(&mut self) {
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
}
