//! A document's durable store: a snapshot of the relay's replica plus an
//! append-only log of every broadcast message since, in the relay's order.
//!
//! A document's directory, and the data directory, are synced into their
//! parent when they are made, before anything in them is acknowledged.
//!
//! Files in the document's directory:
//! - `snapshot`: magic, length, CRC-32, then [`Snapshot`] in postcard. It is
//!   replaced atomically (written aside, synced, renamed, directory synced).
//! - `log`: magic and the log's identity, then records, each a length, a
//!   CRC-32 and a body: a message with its position, the incarnation of a
//!   relay that started on this log, or how many frames of an evicted
//!   incarnation's last connection the relay applied. Appends are synced
//!   (`fdatasync`) before anything they contain is acknowledged or
//!   forwarded.
//!
//! Recovery reads the snapshot, then the log; a record that is incomplete
//! or fails its checksum ends the log (a write torn by a crash) and the
//! file is cut there. A whole record of a kind this version does not know
//! (a later version's) is skipped; a later version adds kinds rather than
//! lengthen a known one's record, which this version would cut. Records
//! at or below the snapshot's position are skipped, so a crash between
//! writing a snapshot and truncating the log is harmless. See DESIGN.md, "The relay's store", for why a plain file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The log's magic: version 2 may hold count records (`KIND_APPLIED`),
/// which a relay that reads only version 1 would take for a torn tail and
/// cut; it refuses a version-2 log instead. A version-1 log is upgraded in
/// place when it is opened.
const LOG_MAGIC: &[u8; 8] = b"FCSLOG\x00\x02";
const LOG_MAGIC_V1: &[u8; 8] = b"FCSLOG\x00\x01";
const SNAP_MAGIC: &[u8; 8] = b"FCSSNP\x00\x01";
const LOG_HEADER: u64 = 16;
const KIND_MESSAGE: u8 = 0;
const KIND_RELAY: u8 = 1;
const KIND_APPLIED: u8 = 2;

/// What the snapshot file holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// The log's identity.
    pub(crate) log_id: u64,
    /// The last position the state covers.
    pub(crate) position: u64,
    /// Relay incarnations that ran on this log.
    pub(crate) relays: Vec<u32>,
    /// Tags of peers that left or were evicted: their messages are refused.
    pub(crate) departed: Vec<u32>,
    /// [`facsimile_core::Replica::export_state`].
    #[serde(with = "serde_bytes")]
    pub(crate) state: Vec<u8>,
}

/// One record of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A broadcast message and its position.
    Message { position: u64, bytes: Bytes },
    /// A relay incarnation started on this log.
    Relay(u32),
    /// How many frames of `tag`'s last connection the relay applied, for
    /// the welcome after its eviction; `None` forgets an earlier count (a
    /// new connection counts from zero).
    Applied { tag: u32, frames: Option<u64> },
}

/// A document's store; `None` directory for a relay without persistence.
pub(crate) struct Store {
    dir: Option<PathBuf>,
    log: Option<File>,
    log_id: u64,
    /// Bytes of the log file, written or not.
    log_bytes: u64,
    /// Bytes the log held when it was started (its header and the counts
    /// a compaction carried): what it grew by since is what compaction
    /// looks at.
    log_floor: u64,
    /// Records appended since the last commit.
    buf: Vec<u8>,
}

/// A closed document's store as it is on disk, read without changing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OnDisk {
    /// The position the snapshot covers (0 without one).
    pub(crate) snapshot_position: u64,
    /// The last position stored, in the snapshot or the log.
    pub(crate) position: u64,
    pub(crate) snapshot_bytes: u64,
    pub(crate) log_bytes: u64,
}

/// Reads what the store in `dir` holds, writing nothing (a torn tail is
/// left for the recovery that opens the document to cut): `None` when it
/// holds no store. The files are streamed, never held whole: at most one
/// record of the log is in memory at a time.
///
/// # Errors
/// As [`Store::open`], for files that are not a store.
pub(crate) fn read_on_disk(dir: &Path) -> io::Result<Option<OnDisk>> {
    let snapshot_path = dir.join("snapshot");
    let snapshot = snapshot_position(&snapshot_path)?;
    let log_path = dir.join("log");
    let log = match File::open(&log_path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if snapshot.is_none() && log.is_none() {
        return Ok(None);
    }
    let snapshot_position = snapshot.map_or(0, |(position, _)| position);
    let mut position = snapshot_position;
    let mut log_bytes = 0;
    if let Some(log) = log {
        log_bytes = log.metadata()?.len();
        if log_bytes > 0 {
            position = position.max(last_logged_position(log, log_bytes, &log_path)?);
        }
    }
    Ok(Some(OnDisk {
        snapshot_position,
        position,
        snapshot_bytes: snapshot.map_or(0, |(_, bytes)| bytes),
        log_bytes,
    }))
}

/// The position a snapshot covers and its size, checked as
/// [`read_snapshot`] checks it, reading it in chunks.
fn snapshot_position(path: &Path) -> io::Result<Option<(u64, u64)>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |what: &str| invalid(format!("{}: {what}", path.display()));
    let mut header = [0u8; 20];
    if f.read_exact(&mut header).is_err() || &header[..8] != SNAP_MAGIC {
        return Err(bad("not a facsimile snapshot"));
    }
    let len = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
    // The body starts with the log's identity and the position, varints.
    let mut start = Vec::with_capacity(20);
    let mut hasher = crc32fast::Hasher::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut read = 0u64;
    loop {
        let n = f.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
        let want = 20usize.saturating_sub(start.len()).min(n);
        start.extend_from_slice(&chunk[..want]);
        read += n as u64;
    }
    if read != len || hasher.finalize() != crc {
        return Err(bad("the snapshot is damaged (length or checksum)"));
    }
    let ((_, position), _) =
        postcard::take_from_bytes::<(u64, u64)>(&start).map_err(|e| bad(&e.to_string()))?;
    Ok(Some((position, 20 + len)))
}

/// The last position of a message in the log's valid prefix, reading it a
/// record at a time (as [`parse_log`] reads it).
fn last_logged_position(file: File, file_len: u64, path: &Path) -> io::Result<u64> {
    let mut r = io::BufReader::new(file);
    let mut header = [0u8; LOG_HEADER as usize];
    if r.read_exact(&mut header).is_err()
        || (&header[..8] != LOG_MAGIC && &header[..8] != LOG_MAGIC_V1)
    {
        return Err(invalid(format!(
            "{}: not a facsimile log of a version this relay reads; move it away to start afresh",
            path.display()
        )));
    }
    let mut at = LOG_HEADER;
    let mut position = 0;
    let mut body = Vec::new();
    loop {
        let mut head = [0u8; 8];
        if at + 8 > file_len || r.read_exact(&mut head).is_err() {
            break;
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len == 0 || at + 8 + u64::from(len) > file_len {
            break;
        }
        body.resize(len as usize, 0);
        if r.read_exact(&mut body).is_err() || crc32fast::hash(&body) != crc {
            break;
        }
        match (body[0], len) {
            (KIND_MESSAGE, 9..) => {
                let p = u64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
                position = position.max(p);
            }
            (KIND_RELAY, 5) | (KIND_APPLIED, 5 | 13) => {}
            (KIND_MESSAGE | KIND_RELAY | KIND_APPLIED, _) => break,
            _ => {}
        }
        at += 8 + u64::from(len);
    }
    Ok(position)
}

/// What recovery found.
pub(crate) struct Recovered {
    pub(crate) store: Store,
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) records: Vec<Record>,
}

impl Store {
    /// A store that keeps nothing.
    pub(crate) fn ephemeral() -> Store {
        Store {
            dir: None,
            log: None,
            log_id: rand::random(),
            log_bytes: 0,
            log_floor: 0,
            buf: Vec::new(),
        }
    }

    /// Opens (or creates) the store in `dir` and reads what it holds.
    ///
    /// # Errors
    /// IO errors, and `InvalidData` when the files are not a store or the
    /// snapshot and the log belong to different logs.
    pub(crate) fn open(dir: &Path) -> io::Result<Recovered> {
        create_dir_durably(dir)?;
        remove_stale_files(dir);
        let snapshot = read_snapshot(&dir.join("snapshot"))?;
        let log_path = dir.join("log");
        let (log_id, records, valid_len, file_len, upgrade) = match read_file(&log_path)? {
            Some(data) => {
                let data = Bytes::from(data);
                let (log_id, records, valid) = parse_log(&data, &log_path)?;
                let upgrade = &data[..8] == LOG_MAGIC_V1;
                (Some(log_id), records, valid, data.len() as u64, upgrade)
            }
            None => (None, Vec::new(), 0, 0, false),
        };
        let log_id = match (&snapshot, log_id) {
            (Some(s), Some(l)) if s.log_id != l => {
                return Err(invalid(format!(
                    "{}: the snapshot belongs to log {:016x} but the log is {l:016x}; \
                     restore the matching files or move the directory away",
                    dir.display(),
                    s.log_id
                )));
            }
            (_, Some(l)) => l,
            (Some(s), None) => s.log_id,
            (None, None) => rand::random(),
        };
        let mut store = Store {
            dir: Some(dir.to_path_buf()),
            log: None,
            log_id,
            log_bytes: 0,
            log_floor: 0,
            buf: Vec::new(),
        };
        if file_len == 0 {
            store.reset_log(&[])?;
        } else {
            if upgrade {
                // Before anything of version 2 is appended.
                let mut f = OpenOptions::new().write(true).open(&log_path)?;
                f.write_all(LOG_MAGIC)?;
                f.sync_all()?;
            }
            let file = OpenOptions::new().append(true).open(&log_path)?;
            if valid_len < file_len {
                tracing::warn!(
                    path = %log_path.display(),
                    kept = valid_len,
                    cut = file_len - valid_len,
                    "the log ends in a torn or corrupt record; cutting it there"
                );
                file.set_len(valid_len)?;
                file.sync_all()?;
            }
            store.log = Some(file);
            store.log_bytes = valid_len;
            store.log_floor = LOG_HEADER;
        }
        let records = records
            .into_iter()
            .filter(|r| match (r, &snapshot) {
                (Record::Message { position, .. }, Some(s)) => *position > s.position,
                _ => true,
            })
            .collect();
        Ok(Recovered {
            store,
            snapshot,
            records,
        })
    }

    /// The log's identity.
    pub(crate) fn log_id(&self) -> u64 {
        self.log_id
    }

    /// Whether the store writes to disk.
    pub(crate) fn is_durable(&self) -> bool {
        self.dir.is_some()
    }

    /// Size of the snapshot file on disk (0 without one).
    pub(crate) fn snapshot_bytes(&self) -> u64 {
        self.dir.as_ref().map_or(0, |d| {
            fs::metadata(d.join("snapshot")).map_or(0, |m| m.len())
        })
    }

    /// Size of the log, committed or not.
    pub(crate) fn log_bytes(&self) -> u64 {
        self.log_bytes + self.buf.len() as u64
    }

    /// What the log grew by since it was started.
    pub(crate) fn log_growth(&self) -> u64 {
        self.log_bytes() - self.log_floor
    }

    /// Whether records wait for [`Store::commit`].
    pub(crate) fn is_dirty(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Appends a message (durable after the next commit).
    pub(crate) fn append_message(&mut self, position: u64, bytes: &[u8]) {
        if self.dir.is_some() {
            put_record(
                &mut self.buf,
                KIND_MESSAGE,
                &[&position.to_le_bytes(), bytes],
            );
        }
    }

    /// Records that a relay incarnation starts on this log.
    pub(crate) fn append_relay(&mut self, incarnation: u32) {
        if self.dir.is_some() {
            put_record(&mut self.buf, KIND_RELAY, &[&incarnation.to_le_bytes()]);
        }
    }

    /// Records how many frames of `tag`'s last connection were applied, or
    /// with `None` that an earlier count no longer holds.
    pub(crate) fn append_applied(&mut self, tag: u32, frames: Option<u64>) {
        if self.dir.is_some() {
            put_applied(&mut self.buf, tag, frames);
        }
    }

    /// Writes the appended records and waits until they are on disk.
    ///
    /// # Errors
    /// IO errors: nothing appended since the last commit may be taken as
    /// durable.
    pub(crate) fn commit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = self.log.as_mut().expect("a durable store has a log");
        let written = write_and_sync(file, &self.buf, self.dir.as_deref());
        if written.is_err() {
            // Whatever of it reached the file is cut, as far as that
            // works: read back by the next recovery, it would pass for
            // logged, and a message sent again would be acknowledged as
            // such though it may not be on disk. (A torn record is cut by
            // its checksum anyway.)
            let _ = file.set_len(self.log_bytes).and_then(|()| file.sync_data());
            return written;
        }
        self.log_bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Replaces the snapshot and starts the log again, holding only the
    /// counts in `applied` (the snapshot has no room for them). Call right
    /// after a commit, with the state as of the last committed position.
    ///
    /// # Errors
    /// IO errors; the previous snapshot and log stay valid.
    pub(crate) fn compact(
        &mut self,
        snapshot: &Snapshot,
        applied: impl IntoIterator<Item = (u32, u64)>,
    ) -> io::Result<()> {
        debug_assert!(self.buf.is_empty(), "compact after commit");
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let body = postcard::to_allocvec(snapshot).map_err(|e| invalid(e.to_string()))?;
        let mut data = Vec::with_capacity(body.len() + 20);
        data.extend_from_slice(SNAP_MAGIC);
        data.extend_from_slice(&(body.len() as u64).to_le_bytes());
        data.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        data.extend_from_slice(&body);
        write_atomically(&dir, "snapshot", &data)?;
        let mut records = Vec::new();
        for (tag, frames) in applied {
            put_applied(&mut records, tag, Some(frames));
        }
        self.reset_log(&records)
    }

    /// Starts a log holding only `records`, atomically.
    fn reset_log(&mut self, records: &[u8]) -> io::Result<()> {
        let dir = self.dir.clone().expect("a durable store has a directory");
        let mut data = Vec::with_capacity(LOG_HEADER as usize + records.len());
        data.extend_from_slice(LOG_MAGIC);
        data.extend_from_slice(&self.log_id.to_le_bytes());
        data.extend_from_slice(records);
        write_atomically(&dir, "log", &data)?;
        self.log = Some(OpenOptions::new().append(true).open(dir.join("log"))?);
        self.log_bytes = data.len() as u64;
        self.log_floor = self.log_bytes;
        Ok(())
    }
}

/// Appends `data` to the log and waits until it is on disk.
fn write_and_sync(file: &mut File, data: &[u8], dir: Option<&Path>) -> io::Result<()> {
    #[cfg(test)]
    if let Err(e) = faults::check(dir) {
        // Part of it written, as a write that fills the disk leaves it.
        file.write_all(&data[..data.len() / 2])?;
        return Err(e);
    }
    #[cfg(not(test))]
    let _ = dir;
    file.write_all(data)?;
    file.sync_data()
}

/// Appends a record: its length, its CRC-32, then `kind` and `parts`.
fn put_record(buf: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) {
    let len = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let start = buf.len();
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(kind);
    for part in parts {
        buf.extend_from_slice(part);
    }
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_applied(buf: &mut Vec<u8>, tag: u32, frames: Option<u64>) {
    let tag = tag.to_le_bytes();
    match frames {
        Some(n) => put_record(buf, KIND_APPLIED, &[&tag, &n.to_le_bytes()]),
        None => put_record(buf, KIND_APPLIED, &[&tag]),
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match File::open(path) {
        Ok(mut f) => {
            let mut data = Vec::new();
            f.read_to_end(&mut data)?;
            Ok(Some(data))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_snapshot(path: &Path) -> io::Result<Option<Snapshot>> {
    let Some(data) = read_file(path)? else {
        return Ok(None);
    };
    let bad = |what: &str| {
        invalid(format!(
            "{}: {what}; the relay cannot start from it (restore a backup or move it away)",
            path.display()
        ))
    };
    if data.len() < 20 || &data[..8] != SNAP_MAGIC {
        return Err(bad("not a facsimile snapshot"));
    }
    let len = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(data[16..20].try_into().expect("4 bytes"));
    let body = &data[20..];
    if body.len() as u64 != len || crc32fast::hash(body) != crc {
        return Err(bad("the snapshot is damaged (length or checksum)"));
    }
    postcard::from_bytes(body)
        .map(Some)
        .map_err(|e| bad(&e.to_string()))
}

/// Parses a log: its identity, its valid records, and the length of the
/// valid prefix.
fn parse_log(data: &Bytes, path: &Path) -> io::Result<(u64, Vec<Record>, u64)> {
    if data.len() < LOG_HEADER as usize || (&data[..8] != LOG_MAGIC && &data[..8] != LOG_MAGIC_V1) {
        return Err(invalid(format!(
            "{}: not a facsimile log of a version this relay reads; move it away to start afresh",
            path.display()
        )));
    }
    let log_id = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    let mut records = Vec::new();
    let mut at = LOG_HEADER as usize;
    while at + 8 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        let body_at = at + 8;
        if len == 0 || body_at + len > data.len() {
            break;
        }
        let body = &data[body_at..body_at + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let tag = || u32::from_le_bytes(body[1..5].try_into().expect("4 bytes"));
        let record = match (body[0], len) {
            (KIND_MESSAGE, 9..) => Some(Record::Message {
                position: u64::from_le_bytes(body[1..9].try_into().expect("8 bytes")),
                bytes: data.slice(body_at + 9..body_at + len),
            }),
            (KIND_RELAY, 5) => Some(Record::Relay(tag())),
            (KIND_APPLIED, 5) => Some(Record::Applied {
                tag: tag(),
                frames: None,
            }),
            (KIND_APPLIED, 13) => Some(Record::Applied {
                tag: tag(),
                frames: Some(u64::from_le_bytes(body[5..13].try_into().expect("8 bytes"))),
            }),
            (KIND_MESSAGE | KIND_RELAY | KIND_APPLIED, _) => break,
            // A later version's record, whole and checked: not ours to read.
            _ => None,
        };
        records.extend(record);
        at = body_at + len;
    }
    Ok((log_id, records, at as u64))
}

/// Makes `dir` and whichever of its parents are missing, each new
/// directory's entry synced in its parent: a crash must not lose a
/// document's directory (its log and what was acknowledged from it) after
/// the files in it were synced.
///
/// # Errors
/// IO errors.
pub(crate) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    fs::create_dir_all(dir)?;
    // Outermost first: an entry is durable once its parent's is.
    for made in missing.into_iter().rev() {
        let parent = match made.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Removes what a replacement that failed (a compaction on a full disk)
/// or a crash left aside: `snapshot.tmp` and `log.tmp` are never read, and
/// they would hold their space until the next compaction.
fn remove_stale_files(dir: &Path) {
    for name in ["snapshot.tmp", "log.tmp"] {
        match fs::remove_file(dir.join(name)) {
            Ok(()) => {
                tracing::info!(path = %dir.join(name).display(), "removed a file an unfinished compaction left")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %dir.join(name).display(), error = %e, "cannot remove a file an unfinished compaction left")
            }
        }
    }
}

/// Replaces `dir/name` with `data` so that a crash leaves the old or the
/// new file, never a mix.
fn write_atomically(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    #[cfg(test)]
    faults::check(Some(dir))?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Stores whose writes fail, as on a full disk (for tests).
#[cfg(test)]
pub(crate) mod faults {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static FAILING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// From now on writes of the stores under `dir` fail (`EFBIG`, as past
    /// `ulimit -f`), or with `fail` false succeed again.
    pub(crate) fn fail_writes(dir: &Path, fail: bool) {
        let mut failing = FAILING.lock().unwrap();
        failing.retain(|d| d != dir);
        if fail {
            failing.push(dir.to_path_buf());
        }
    }

    pub(super) fn check(dir: Option<&Path>) -> io::Result<()> {
        let failing = FAILING.lock().unwrap();
        match dir {
            Some(dir) if failing.iter().any(|d| dir.starts_with(d)) => {
                Err(io::Error::from_raw_os_error(27))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "facsimile-store-{name}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_cut() {
        let dir = temp_dir("torn");
        let mut s = Store::open(&dir).unwrap().store;
        let id = s.log_id();
        s.append_relay(7);
        s.append_message(1, b"one");
        s.append_message(2, b"two");
        s.commit().unwrap();
        s.append_message(3, b"three");
        s.commit().unwrap();
        drop(s);
        // A crash in the middle of the next append.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("log"))
            .unwrap();
        f.write_all(&[20, 0, 0, 0, 1, 2, 3, 4, 0, 4]).unwrap();
        drop(f);
        let r = Store::open(&dir).unwrap();
        assert_eq!(r.store.log_id(), id);
        assert!(r.snapshot.is_none());
        assert_eq!(r.records.len(), 4);
        assert_eq!(r.records[0], Record::Relay(7));
        assert_eq!(
            r.records[3],
            Record::Message {
                position: 3,
                bytes: Bytes::from_static(b"three")
            }
        );
        let len = fs::metadata(dir.join("log")).unwrap().len();
        assert_eq!(len, r.store.log_bytes(), "the torn record was cut");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_keeps_the_snapshot_and_only_later_records() {
        let dir = temp_dir("compact");
        let mut s = Store::open(&dir).unwrap().store;
        for p in 1..=10 {
            s.append_message(p, &[p as u8; 3]);
        }
        s.commit().unwrap();
        let snap = Snapshot {
            log_id: s.log_id(),
            position: 10,
            relays: vec![1],
            departed: vec![5, 6],
            state: vec![1, 2, 3],
        };
        s.append_applied(9, Some(4));
        s.commit().unwrap();
        // The counts the relay still keeps go on into the new log.
        s.compact(&snap, [(9, 4), (8, 2)]).unwrap();
        s.append_message(11, b"x");
        s.commit().unwrap();
        drop(s);
        let r = Store::open(&dir).unwrap();
        let got = r.snapshot.unwrap();
        assert_eq!(
            (got.position, got.departed, got.state),
            (10, vec![5, 6], vec![1, 2, 3])
        );
        assert_eq!(
            r.records,
            vec![
                Record::Applied {
                    tag: 9,
                    frames: Some(4)
                },
                Record::Applied {
                    tag: 8,
                    frames: Some(2)
                },
                Record::Message {
                    position: 11,
                    bytes: Bytes::from_static(b"x")
                }
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_covered_by_the_snapshot_are_skipped() {
        // A crash after the snapshot was replaced but before the log was.
        let dir = temp_dir("skip");
        let mut s = Store::open(&dir).unwrap().store;
        for p in 1..=4 {
            s.append_message(p, b"m");
        }
        s.commit().unwrap();
        let body = postcard::to_allocvec(&Snapshot {
            log_id: s.log_id(),
            position: 3,
            ..Snapshot::default()
        })
        .unwrap();
        let mut data = SNAP_MAGIC.to_vec();
        data.extend_from_slice(&(body.len() as u64).to_le_bytes());
        data.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        data.extend_from_slice(&body);
        write_atomically(&dir, "snapshot", &data).unwrap();
        let r = Store::open(&dir).unwrap();
        assert_eq!(r.records.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn applied_counts_survive_a_reopen_and_unknown_records_are_skipped() {
        let dir = temp_dir("applied");
        let mut s = Store::open(&dir).unwrap().store;
        s.append_applied(3, Some(17));
        s.append_applied(3, None);
        // A record of a kind a later version writes, whole and checked.
        put_record(&mut s.buf, 200, &[b"later"]);
        s.append_message(1, b"m");
        s.commit().unwrap();
        let len = s.log_bytes();
        drop(s);
        let r = Store::open(&dir).unwrap();
        assert_eq!(
            r.records,
            vec![
                Record::Applied {
                    tag: 3,
                    frames: Some(17)
                },
                Record::Applied {
                    tag: 3,
                    frames: None
                },
                Record::Message {
                    position: 1,
                    bytes: Bytes::from_static(b"m")
                }
            ]
        );
        assert_eq!(r.store.log_bytes(), len, "nothing was cut");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Random logs of every kind of record, damaged at a random byte (cut
    /// there, or the byte flipped): recovery keeps exactly the records
    /// before the damage (a later version's kinds skipped), cuts the file
    /// there, and appends after it.
    #[test]
    fn a_log_damaged_anywhere_keeps_the_records_before_the_damage() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        for seed in 0..200u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let dir = temp_dir("damaged");
            let mut s = Store::open(&dir).unwrap().store;
            // Each record, or `None` for a later version's, with where it ends.
            let mut written: Vec<(Option<Record>, u64)> = Vec::new();
            for position in 1..=rng.random_range(1..40u64) {
                let record = match rng.random_range(0..5) {
                    0 => Some(Record::Relay(rng.random())),
                    1 => Some(Record::Applied {
                        tag: rng.random(),
                        frames: rng.random_bool(0.5).then(|| rng.random()),
                    }),
                    2 => {
                        let len = rng.random_range(1..8);
                        put_record(&mut s.buf, rng.random_range(3..=255), &[&vec![7; len]]);
                        None
                    }
                    _ => {
                        let bytes: Vec<u8> =
                            (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
                        Some(Record::Message {
                            position,
                            bytes: Bytes::from(bytes),
                        })
                    }
                };
                match &record {
                    Some(Record::Relay(tag)) => s.append_relay(*tag),
                    Some(Record::Applied { tag, frames }) => s.append_applied(*tag, *frames),
                    Some(Record::Message { position, bytes }) => s.append_message(*position, bytes),
                    None => {}
                }
                written.push((record, s.log_bytes()));
            }
            s.commit().unwrap();
            let end = s.log_bytes();
            drop(s);
            let at = rng.random_range(LOG_HEADER..end);
            let path = dir.join("log");
            let cut = rng.random_bool(0.5);
            if cut {
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(at)
                    .unwrap();
            } else {
                let mut data = fs::read(&path).unwrap();
                data[at as usize] ^= 1 << rng.random_range(0..8);
                fs::write(&path, data).unwrap();
            }
            let why = format!("seed {seed}: damaged at {at} of {end}, cut: {cut}");
            let kept: Vec<_> = written.iter().filter(|(_, e)| *e <= at).collect();
            let r = Store::open(&dir).expect(&why);
            let expected: Vec<Record> = kept.iter().filter_map(|(r, _)| r.clone()).collect();
            assert_eq!(r.records, expected, "{why}");
            let valid = kept.last().map_or(LOG_HEADER, |(_, e)| *e);
            assert_eq!(r.store.log_bytes(), valid, "{why}");
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                valid,
                "{why}: cut there"
            );
            let mut s = r.store;
            s.append_relay(1);
            s.commit().unwrap();
            drop(s);
            let again = Store::open(&dir).expect(&why).records;
            assert_eq!(again.len(), expected.len() + 1, "{why}");
            assert_eq!(again.last(), Some(&Record::Relay(1)), "{why}");
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// A log of version 1 (before count records) is read and marked
    /// version 2 before anything is appended, so that a relay that reads
    /// only version 1 refuses it rather than cut it at a count record; a
    /// version this relay does not read is refused and left as it is.
    #[test]
    fn a_version_1_log_is_upgraded_and_an_unknown_version_refused() {
        let dir = temp_dir("v1");
        fs::create_dir_all(&dir).unwrap();
        let mut data = LOG_MAGIC_V1.to_vec();
        data.extend_from_slice(&42u64.to_le_bytes());
        put_record(&mut data, KIND_RELAY, &[&7u32.to_le_bytes()]);
        fs::write(dir.join("log"), &data).unwrap();
        let r = Store::open(&dir).unwrap();
        assert_eq!((r.store.log_id(), r.records), (42, vec![Record::Relay(7)]));
        assert_eq!(&fs::read(dir.join("log")).unwrap()[..8], LOG_MAGIC);
        let mut later = fs::read(dir.join("log")).unwrap();
        later[7] = 3;
        fs::write(dir.join("log"), &later).unwrap();
        assert!(Store::open(&dir).is_err());
        assert_eq!(fs::read(dir.join("log")).unwrap(), later, "left as it was");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A commit that fails (a full disk) leaves nothing of it in the log
    /// to be read back as logged; a compaction that fails leaves the old
    /// snapshot and log, and what it wrote aside is removed when the store
    /// is opened again.
    #[test]
    fn failed_writes_leave_the_store_as_it_was_committed() {
        let dir = temp_dir("failing");
        let mut s = Store::open(&dir).unwrap().store;
        s.append_message(1, b"kept");
        s.commit().unwrap();
        let committed = fs::metadata(dir.join("log")).unwrap().len();
        faults::fail_writes(&dir, true);
        s.append_message(2, b"not durable");
        assert!(s.commit().is_err());
        assert_eq!(fs::metadata(dir.join("log")).unwrap().len(), committed);
        let snapshot = Snapshot {
            log_id: s.log_id(),
            position: 1,
            ..Snapshot::default()
        };
        s.buf.clear();
        assert!(s.compact(&snapshot, []).is_err());
        assert!(dir.join("snapshot.tmp").exists());
        faults::fail_writes(&dir, false);
        drop(s);
        let r = Store::open(&dir).unwrap();
        assert!(r.snapshot.is_none());
        assert_eq!(
            r.records,
            vec![Record::Message {
                position: 1,
                bytes: Bytes::from_static(b"kept")
            }]
        );
        assert!(!dir.join("snapshot.tmp").exists(), "removed");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A closed store's status, read a record at a time, tells what
    /// recovery reads: the snapshot's position, the last message of the
    /// log's valid prefix (a torn tail left as it is), and the sizes.
    #[test]
    fn the_status_on_disk_is_what_recovery_reads() {
        let dir = temp_dir("on-disk");
        let mut s = Store::open(&dir).unwrap().store;
        for p in 1..=5 {
            s.append_message(p, &[p as u8; 100]);
        }
        s.commit().unwrap();
        let snapshot = Snapshot {
            log_id: s.log_id(),
            position: 5,
            state: vec![9; 200_000],
            ..Snapshot::default()
        };
        s.compact(&snapshot, [(3, 1)]).unwrap();
        s.append_relay(1);
        s.append_message(6, b"six");
        s.append_message(300, b"far");
        s.commit().unwrap();
        drop(s);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("log"))
            .unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 0, 9]).unwrap();
        drop(f);
        let on_disk = read_on_disk(&dir).unwrap().unwrap();
        assert_eq!(
            on_disk,
            OnDisk {
                snapshot_position: 5,
                position: 300,
                snapshot_bytes: fs::metadata(dir.join("snapshot")).unwrap().len(),
                log_bytes: fs::metadata(dir.join("log")).unwrap().len(),
            }
        );
        let mut damaged = fs::read(dir.join("snapshot")).unwrap();
        *damaged.last_mut().unwrap() ^= 1;
        fs::write(dir.join("snapshot"), damaged).unwrap();
        assert!(
            read_on_disk(&dir).is_err(),
            "a damaged snapshot is an error"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Compaction looks at what the log grew by since it started, not at
    /// the counts a compaction carried into it: those alone never make
    /// the next batch compact again.
    #[test]
    fn counts_carried_into_a_log_do_not_count_as_its_growth() {
        let dir = temp_dir("floor");
        let mut s = Store::open(&dir).unwrap().store;
        s.compact(&Snapshot::default(), (0..100).map(|t| (t, 1)))
            .unwrap();
        assert!(s.log_bytes() > LOG_HEADER + 100 * 13);
        assert_eq!(s.log_growth(), 0);
        s.append_relay(1);
        assert_eq!(s.log_growth(), 13);
        fs::remove_dir_all(&dir).unwrap();
    }
}
