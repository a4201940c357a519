//! The relay's data directory, held by one relay at a time.
//!
//! Two relays on one directory would each append to, and compact, the
//! other's logs: a compaction renames a fresh log over the file the other
//! relay goes on appending to, and what it acknowledged after that is gone
//! at the next start. So a relay takes an exclusive lock on a file in the
//! directory when it starts, and holds it for as long as anything of it
//! may write there: the relay itself, and each of its open documents.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The lock file, in the data directory. A document's name cannot start
/// with a dot ([`crate::valid_name`]), so no document's directory takes
/// its place.
const LOCK_FILE: &str = ".lock";

/// Another relay holds the data directory: one in this process or in
/// another, still running (or with a document still open).
///
/// [`crate::Server::bind`] and [`crate::Server::serve`] fail with it inside
/// an [`io::Error`] of kind [`io::ErrorKind::ResourceBusy`]:
///
/// ```no_run
/// use facsimile_server::{DataDirInUse, Server, ServerConfig};
///
/// # async fn run() {
/// if let Err(e) = Server::bind(ServerConfig::default()).await {
///     if let Some(in_use) = e.get_ref().and_then(|e| e.downcast_ref::<DataDirInUse>()) {
///         eprintln!("{} is taken", in_use.dir.display());
///     }
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[error(
    "the data directory {} is in use by another relay (it holds a lock on {}); \
     stop that relay, or give this one another data directory",
    .dir.display(),
    .dir.join(LOCK_FILE).display()
)]
#[non_exhaustive]
pub struct DataDirInUse {
    /// The data directory.
    pub dir: PathBuf,
}

/// A relay's hold on its data directory: the lock file, locked, until the
/// last clone is dropped.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Locks the data directory `dir`, which exists.
    ///
    /// # Errors
    /// [`DataDirInUse`] (kind [`io::ErrorKind::ResourceBusy`]) when another
    /// relay holds it; IO errors when the lock file cannot be opened or
    /// locked.
    pub(crate) fn acquire(dir: &Path) -> io::Result<Arc<DataDirLock>> {
        let path = dir.join(LOCK_FILE);
        match try_lock(&path) {
            Ok(Some(file)) => Ok(Arc::new(DataDirLock { _file: file })),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                DataDirInUse {
                    dir: dir.to_path_buf(),
                },
            )),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot lock the data directory ({}): {e}", path.display()),
            )),
        }
    }
}

/// How the lock file is opened: made if missing, its content (none) kept.
fn lock_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    options
}

/// The lock file, opened and locked; `None` when another open file (of
/// this process or another) holds its lock. `flock` locks belong to the
/// open file, not the process, so a second relay in the same process is
/// refused too, and the lock goes when the file is closed, or the
/// process ends however it ends.
#[cfg(all(
    unix,
    not(any(
        target_os = "espidf",
        target_os = "horizon",
        target_os = "solaris",
        target_os = "vita"
    ))
))]
fn try_lock(path: &Path) -> io::Result<Option<File>> {
    use rustix::fs::{FlockOperation, flock};
    let file = lock_file_options().open(path)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The lock file, opened without sharing: while it is open, nobody else
/// can open it. `None` when another handle has it open.
#[cfg(windows)]
fn try_lock(path: &Path) -> io::Result<Option<File>> {
    use std::os::windows::fs::OpenOptionsExt;
    const ERROR_SHARING_VIOLATION: i32 = 32;
    match lock_file_options().share_mode(0).open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.raw_os_error() == Some(ERROR_SHARING_VIOLATION) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Where files cannot be locked, the lock file is only made: nothing stops
/// a second relay on the directory.
#[cfg(not(any(
    windows,
    all(
        unix,
        not(any(
            target_os = "espidf",
            target_os = "horizon",
            target_os = "solaris",
            target_os = "vita"
        ))
    )
)))]
fn try_lock(path: &Path) -> io::Result<Option<File>> {
    lock_file_options().open(path).map(Some)
}
