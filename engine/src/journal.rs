//! The append-only command journal: framed, checksummed records with group commit.
//!
//! Every command the sequencer accepts is written here, and made durable, before it
//! is acknowledged. The [`Journal`] trait has two implementations:
//! - [`FileJournal`]: one append-only file. [`Journal::append`] only buffers;
//!   [`Journal::commit`] writes the whole batch with one positional write and one
//!   `sync_data` (group commit), so the cost of an fsync is shared by the batch.
//!   The two halves are also available apart: [`Journal::write`] (one write, not yet
//!   durable) and [`Journal::sync`] (takes `&self`, so another thread can wait for the
//!   disk while the engine applies the batch; nothing is acknowledged before it returns).
//! - [`MemJournal`]: the same bytes in a shared [`MemStorage`] buffer, for the
//!   simulator and tests. It survives the journal being dropped (a "crash") and can
//!   inject torn commits ([`MemJournal::tear_next_commit`]).
//!
//! # Record format
//!
//! ```text
//! [u32 LE payload length][u32 LE crc32][payload bytes]
//! ```
//!
//! The crc32 covers the 4 length bytes and then the payload. Covering the length
//! means a zero-filled tail (what some file systems leave after a crash) never
//! parses as a run of valid empty records, and a corrupted length is caught even
//! when it happens to frame a plausible payload.
//!
//! # Opening and damage
//!
//! Opening scans records from the start until the first record that is short
//! ([`DamageKind::Torn`]), fails its checksum ([`DamageKind::BadChecksum`]) or
//! announces a length above `record_len_max` ([`DamageKind::OversizeLength`]). What
//! follows is a damaged tail: it is reported as a [`TailDamage`] and the file is
//! truncated to the end of the last good record. Only an unacknowledged group commit
//! can be torn, because acknowledgement waits for `commit` to return.
//!
//! Damage followed by a valid record is different: the bytes after it may hold
//! acknowledged commands, so by default ([`MidJournalDamage::Refuse`]) opening fails
//! with [`JournalError::CorruptMiddle`] and leaves the file untouched. An operator who
//! accepts the loss can reopen with [`MidJournalDamage::Truncate`]. (A crash can
//! persist a later page of the final batch but not an earlier one; that looks like
//! mid-journal damage and is refused rather than guessed at.)
//!
//! A [`FileJournal`] holds an exclusive advisory lock on its file while open, so two
//! writers (two engines, two processes) can never interleave records.
//!
//! # Invariants
//! - At most one open [`FileJournal`] per file (lock).
//! - The committed region (`committed_len` bytes) is always a sequence of whole,
//!   valid records; appends only ever go after it.
//! - `commit` (and `sync`) return `Ok` only after every written record is on stable
//!   storage (`sync_data`).
//! - After a failed write or sync the journal is poisoned: every later call fails,
//!   because the file may hold a partial batch that only a reopen (scan + truncate)
//!   can fix.
//! - [`scan`] never panics, on any bytes; the records it returns are exactly the
//!   longest prefix of whole, valid records.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes of a record header: length and checksum.
pub const RECORD_HEADER_LEN: usize = 8;

/// Default upper bound on one record's payload length, in bytes.
pub const RECORD_LEN_MAX_DEFAULT: u32 = 64 * 1024;

/// How a damaged record was recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DamageKind {
    /// The file ends inside the header or the payload.
    Torn,
    /// The checksum does not match the length and payload.
    BadChecksum,
    /// The length field exceeds `record_len_max`.
    OversizeLength,
}

/// A damaged tail found (and cut off) when opening a journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TailDamage {
    /// Byte offset of the first damaged record; the journal was truncated here.
    pub offset: u64,
    /// What was wrong with it.
    pub kind: DamageKind,
    /// Bytes removed from the end of the journal.
    pub bytes_dropped: u64,
}

/// What opening a journal found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Whole valid records kept.
    pub n_records: u64,
    /// Bytes kept (the end of the last good record).
    pub committed_len: u64,
    /// The damaged tail that was truncated, if any.
    pub damage: Option<TailDamage>,
}

/// What to do when damage is followed by a valid record (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MidJournalDamage {
    /// Refuse to open ([`JournalError::CorruptMiddle`]); the file is left untouched.
    #[default]
    Refuse,
    /// Truncate at the first damage anyway, losing the valid records after it.
    Truncate,
}

/// Limits and policies of a journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// Largest payload of one record, in bytes. Larger appends are refused; a larger
    /// length field on disk is damage.
    pub record_len_max: u32,
    /// Policy for damage in the middle of the journal.
    pub mid_journal_damage: MidJournalDamage,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            record_len_max: RECORD_LEN_MAX_DEFAULT,
            mid_journal_damage: MidJournalDamage::Refuse,
        }
    }
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The operating system refused a read, write, sync or truncate.
    #[error("journal I/O on {path}: {source}")]
    Io {
        /// The journal file (`<memory>` for [`MemJournal`]).
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An append larger than `record_len_max`.
    #[error("record of {len} bytes exceeds record_len_max {max}")]
    RecordTooLong {
        /// Payload length.
        len: usize,
        /// The configured limit.
        max: u32,
    },
    /// Damage with a valid record after it: not a torn tail, and not repaired.
    #[error(
        "journal damaged at offset {offset} ({kind:?}) but a valid record follows at \
         {next_valid_offset}: refusing to truncate possibly acknowledged records"
    )]
    CorruptMiddle {
        /// Offset of the damaged record.
        offset: u64,
        /// What was wrong with it.
        kind: DamageKind,
        /// Offset of a valid record found after it.
        next_valid_offset: u64,
    },
    /// Another open journal (in this or another process) holds the file's lock.
    #[error("journal {path} is open elsewhere (locked)")]
    Locked {
        /// The journal file.
        path: PathBuf,
    },
    /// An earlier commit failed; the journal must be reopened.
    #[error("journal poisoned by an earlier failed write or sync; reopen to recover")]
    Poisoned,
    /// The configuration is unusable.
    #[error("invalid journal config: {0}")]
    InvalidConfig(&'static str),
}

/// Committed records read back from a journal, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    bytes: Vec<u8>,
    payloads: Vec<Range<usize>>,
}

impl Records {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.payloads.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }

    /// The payloads in journal order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.payloads.iter().map(|range| &self.bytes[range.clone()])
    }
}

/// The result of scanning journal bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Payload ranges of the whole, valid records, in order.
    pub payloads: Vec<Range<usize>>,
    /// End of the last valid record.
    pub good_len: usize,
    /// The first damaged record, if the bytes do not end at `good_len`.
    pub damage: Option<(usize, DamageKind)>,
}

/// Appends one framed record (header + payload) to `out`.
///
/// The caller checks `payload.len()` against `record_len_max`; lengths above
/// `u32::MAX` cannot be framed.
///
/// # Panics
/// If `payload` is longer than `u32::MAX` bytes (a bug: appends are bounded first).
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("record length fits u32 (checked by caller)");
    let len_bytes = len.to_le_bytes();
    out.reserve(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&record_crc(len_bytes, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn record_crc(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

fn read_u32_le(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let word: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
}

/// Checks the record starting at `offset`; on success returns its payload range.
fn check_record_at(
    bytes: &[u8],
    offset: usize,
    record_len_max: u32,
) -> Result<Range<usize>, DamageKind> {
    let (Some(len), Some(crc)) = (read_u32_le(bytes, offset), read_u32_le(bytes, offset + 4))
    else {
        return Err(DamageKind::Torn);
    };
    if len > record_len_max {
        return Err(DamageKind::OversizeLength);
    }
    let start = offset + RECORD_HEADER_LEN;
    let end = start.checked_add(len as usize).ok_or(DamageKind::Torn)?;
    let Some(payload) = bytes.get(start..end) else {
        return Err(DamageKind::Torn);
    };
    if record_crc(len.to_le_bytes(), payload) != crc {
        return Err(DamageKind::BadChecksum);
    }
    Ok(start..end)
}

/// Scans `bytes` as journal records: the longest prefix of whole valid records and
/// the first damage after it. Never panics.
pub fn scan(bytes: &[u8], record_len_max: u32) -> Scan {
    let mut result = Scan::default();
    let mut offset = 0usize;
    while offset < bytes.len() {
        match check_record_at(bytes, offset, record_len_max) {
            Ok(payload) => {
                offset = payload.end;
                result.payloads.push(payload);
            }
            Err(kind) => {
                result.damage = Some((offset, kind));
                break;
            }
        }
    }
    result.good_len = offset;
    result
}

/// The offset of the first valid record strictly after `damage_offset`, if any.
/// Used to tell a damaged tail from damage in the middle.
fn find_valid_record_after(
    bytes: &[u8],
    damage_offset: usize,
    record_len_max: u32,
) -> Option<usize> {
    (damage_offset + 1..bytes.len()).find(|&at| check_record_at(bytes, at, record_len_max).is_ok())
}

/// Scans `bytes` and applies the damage policy: the report and the records kept.
fn scan_with_policy(
    bytes: &[u8],
    config: &JournalConfig,
) -> Result<(Scan, OpenReport), JournalError> {
    let scanned = scan(bytes, config.record_len_max);
    let mut report = OpenReport {
        n_records: scanned.payloads.len() as u64,
        committed_len: scanned.good_len as u64,
        damage: None,
    };
    if let Some((offset, kind)) = scanned.damage {
        if config.mid_journal_damage == MidJournalDamage::Refuse
            && let Some(next) = find_valid_record_after(bytes, offset, config.record_len_max)
        {
            return Err(JournalError::CorruptMiddle {
                offset: offset as u64,
                kind,
                next_valid_offset: next as u64,
            });
        }
        report.damage = Some(TailDamage {
            offset: offset as u64,
            kind,
            bytes_dropped: (bytes.len() - offset) as u64,
        });
    }
    Ok((scanned, report))
}

fn check_config(config: &JournalConfig) -> Result<(), JournalError> {
    if config.record_len_max == 0 {
        return Err(JournalError::InvalidConfig(
            "record_len_max must be positive",
        ));
    }
    Ok(())
}

/// An append-only log of opaque records with group commit.
///
/// `append` buffers; `write` hands the buffered records to storage; `sync` waits until
/// everything written is durable. Nothing is durable, and nothing may be acknowledged,
/// until `sync` (or `commit`, which is `write` then `sync`) returns `Ok`.
pub trait Journal: Send + Sync {
    /// Buffers one record for the next write.
    ///
    /// # Errors
    /// [`JournalError::RecordTooLong`] above `record_len_max` (nothing is buffered);
    /// [`JournalError::Poisoned`] after a failed write or sync.
    fn append(&mut self, payload: &[u8]) -> Result<(), JournalError>;

    /// Writes every buffered record to storage at once (one write), not yet durable.
    ///
    /// # Errors
    /// I/O errors, after which the journal is poisoned.
    fn write(&mut self) -> Result<(), JournalError>;

    /// Waits until every written record is on stable storage (one `sync_data`; none if
    /// nothing was written since the last sync). Takes `&self` so that it can run on
    /// another thread while the caller works.
    ///
    /// # Errors
    /// I/O errors, after which the journal is poisoned: the disk may hold part of the
    /// written batch, and only reopening (which truncates a torn tail) restores a
    /// known state.
    fn sync(&self) -> Result<(), JournalError>;

    /// `write` then `sync`: makes every buffered record durable (group commit).
    ///
    /// # Errors
    /// As [`Journal::write`] and [`Journal::sync`].
    fn commit(&mut self) -> Result<(), JournalError> {
        self.write()?;
        self.sync()
    }

    /// True when `sync` waits for a device, so overlapping it with other work pays
    /// (false for in-memory journals).
    fn sync_blocks(&self) -> bool;

    /// Reads back every written record, in order.
    ///
    /// # Errors
    /// I/O errors, or damage inside the written region (someone else wrote the file).
    fn read_all(&mut self) -> Result<Records, JournalError>;

    /// Bytes written (durable once `sync` has returned `Ok`).
    fn committed_len(&self) -> u64;

    /// Records buffered since the last write.
    fn n_pending(&self) -> usize;
}

/// A [`Journal`] in one append-only file.
#[derive(Debug)]
pub struct FileJournal {
    file: File,
    path: PathBuf,
    config: JournalConfig,
    pending: Vec<u8>,
    n_pending: usize,
    committed_len: u64,
    unsynced: AtomicBool,
    poisoned: AtomicBool,
}

impl FileJournal {
    /// Opens (or creates) the journal file at `path`, scans it, truncates a damaged
    /// tail and makes the truncation durable.
    ///
    /// # Errors
    /// I/O errors; [`JournalError::CorruptMiddle`] for damage followed by valid
    /// records under [`MidJournalDamage::Refuse`].
    pub fn open(
        path: &Path,
        config: JournalConfig,
    ) -> Result<(FileJournal, OpenReport), JournalError> {
        check_config(&config)?;
        let io_err = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        if !existed {
            sync_parent_dir(path).map_err(io_err)?;
        }
        // One writer per journal, across processes too (an advisory lock held for as
        // long as the file is open).
        file.try_lock().map_err(|error| match error {
            std::fs::TryLockError::WouldBlock => JournalError::Locked {
                path: path.to_path_buf(),
            },
            std::fs::TryLockError::Error(source) => io_err(source),
        })?;
        let bytes = read_whole(&file).map_err(io_err)?;
        let (_, report) = scan_with_policy(&bytes, &config)?;
        if report.committed_len != bytes.len() as u64 {
            if let Some(damage) = report.damage {
                tracing::warn!(
                    path = %path.display(),
                    offset = damage.offset,
                    kind = ?damage.kind,
                    bytes_dropped = damage.bytes_dropped,
                    "journal tail damaged; truncating to the last good record"
                );
            }
            file.set_len(report.committed_len).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        let journal = FileJournal {
            file,
            path: path.to_path_buf(),
            config,
            pending: Vec::new(),
            n_pending: 0,
            committed_len: report.committed_len,
            unsynced: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
        };
        Ok((journal, report))
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_err(&self, source: io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn read_whole(file: &File) -> io::Result<Vec<u8>> {
    let len = file.metadata()?.len();
    let len = usize::try_from(len).map_err(|_| io::Error::other("journal larger than memory"))?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// Makes a new directory entry durable.
pub(crate) fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

impl Journal for FileJournal {
    fn append(&mut self, payload: &[u8]) -> Result<(), JournalError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(JournalError::Poisoned);
        }
        if payload.len() > self.config.record_len_max as usize {
            return Err(JournalError::RecordTooLong {
                len: payload.len(),
                max: self.config.record_len_max,
            });
        }
        encode_record(payload, &mut self.pending);
        self.n_pending += 1;
        Ok(())
    }

    fn write(&mut self) -> Result<(), JournalError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(JournalError::Poisoned);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.file.write_all_at(&self.pending, self.committed_len) {
            self.poisoned.store(true, Ordering::Release);
            return Err(self.io_err(source));
        }
        self.unsynced.store(true, Ordering::Release);
        self.committed_len += self.pending.len() as u64;
        self.pending.clear();
        self.n_pending = 0;
        Ok(())
    }

    fn sync(&self) -> Result<(), JournalError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(JournalError::Poisoned);
        }
        if !self.unsynced.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        if let Err(source) = self.file.sync_data() {
            self.poisoned.store(true, Ordering::Release);
            return Err(self.io_err(source));
        }
        Ok(())
    }

    fn sync_blocks(&self) -> bool {
        true
    }

    fn read_all(&mut self) -> Result<Records, JournalError> {
        let len = usize::try_from(self.committed_len)
            .map_err(|_| self.io_err(io::Error::other("journal larger than memory")))?;
        let mut bytes = vec![0u8; len];
        self.file
            .read_exact_at(&mut bytes, 0)
            .map_err(|source| self.io_err(source))?;
        records_from_committed(bytes, &self.config)
    }

    fn committed_len(&self) -> u64 {
        self.committed_len
    }

    fn n_pending(&self) -> usize {
        self.n_pending
    }
}

fn records_from_committed(bytes: Vec<u8>, config: &JournalConfig) -> Result<Records, JournalError> {
    let scanned = scan(&bytes, config.record_len_max);
    if let Some((offset, kind)) = scanned.damage {
        // The committed region was valid when opened or written: someone changed it.
        return Err(JournalError::CorruptMiddle {
            offset: offset as u64,
            kind,
            next_valid_offset: bytes.len() as u64,
        });
    }
    Ok(Records {
        bytes,
        payloads: scanned.payloads,
    })
}

/// Shared in-memory "disk" for [`MemJournal`]: survives the journal being dropped,
/// so a test or the simulator can crash an engine and recover from the same bytes.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl MemStorage {
    /// Empty storage.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock cannot leave the bytes half-updated in a way
        // scanning does not handle, so the poison flag is ignored.
        self.bytes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the stored bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// Replaces the stored bytes (fault injection: corrupt, truncate, extend).
    pub fn set_bytes(&self, bytes: Vec<u8>) {
        *self.lock() = bytes;
    }

    /// Stored length in bytes.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// A [`Journal`] over a [`MemStorage`]: same format, same recovery, no disk.
#[derive(Debug)]
pub struct MemJournal {
    storage: MemStorage,
    config: JournalConfig,
    pending: Vec<u8>,
    n_pending: usize,
    committed_len: u64,
    poisoned: AtomicBool,
    tear_next_commit_at: Option<usize>,
}

impl MemJournal {
    /// Opens the journal in `storage`: scans, truncates a damaged tail, reports.
    ///
    /// # Errors
    /// [`JournalError::CorruptMiddle`] as for [`FileJournal::open`].
    pub fn open(
        storage: MemStorage,
        config: JournalConfig,
    ) -> Result<(MemJournal, OpenReport), JournalError> {
        check_config(&config)?;
        let report = {
            let mut bytes = storage.lock();
            let (_, report) = scan_with_policy(&bytes, &config)?;
            bytes.truncate(report.committed_len as usize);
            report
        };
        let journal = MemJournal {
            storage,
            config,
            pending: Vec::new(),
            n_pending: 0,
            committed_len: report.committed_len,
            poisoned: AtomicBool::new(false),
            tear_next_commit_at: None,
        };
        Ok((journal, report))
    }

    /// Fault injection: the next write (or commit) stores only the first `n_bytes` of
    /// its batch and then fails, like a crash in the middle of a write.
    pub fn tear_next_commit(&mut self, n_bytes: usize) {
        self.tear_next_commit_at = Some(n_bytes);
    }

    /// The storage this journal writes to.
    pub fn storage(&self) -> &MemStorage {
        &self.storage
    }
}

impl Journal for MemJournal {
    fn append(&mut self, payload: &[u8]) -> Result<(), JournalError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(JournalError::Poisoned);
        }
        if payload.len() > self.config.record_len_max as usize {
            return Err(JournalError::RecordTooLong {
                len: payload.len(),
                max: self.config.record_len_max,
            });
        }
        encode_record(payload, &mut self.pending);
        self.n_pending += 1;
        Ok(())
    }

    fn write(&mut self) -> Result<(), JournalError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(JournalError::Poisoned);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut bytes = self.storage.lock();
        bytes.truncate(self.committed_len as usize);
        if let Some(n_bytes) = self.tear_next_commit_at.take() {
            let n_bytes = n_bytes.min(self.pending.len());
            bytes.extend_from_slice(&self.pending[..n_bytes]);
            drop(bytes);
            self.poisoned.store(true, Ordering::Release);
            return Err(JournalError::Io {
                path: PathBuf::from("<memory>"),
                source: io::Error::other("injected torn write"),
            });
        }
        bytes.extend_from_slice(&self.pending);
        drop(bytes);
        self.committed_len += self.pending.len() as u64;
        self.pending.clear();
        self.n_pending = 0;
        Ok(())
    }

    fn sync(&self) -> Result<(), JournalError> {
        // Memory is as durable as it gets here; a "crash" keeps the storage.
        if self.poisoned.load(Ordering::Acquire) {
            return Err(JournalError::Poisoned);
        }
        Ok(())
    }

    fn sync_blocks(&self) -> bool {
        false
    }

    fn read_all(&mut self) -> Result<Records, JournalError> {
        let mut bytes = self.storage.bytes();
        bytes.truncate(self.committed_len as usize);
        records_from_committed(bytes, &self.config)
    }

    fn committed_len(&self) -> u64 {
        self.committed_len
    }

    fn n_pending(&self) -> usize {
        self.n_pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            encode_record(payload, &mut out);
        }
        out
    }

    #[test]
    fn scan_reads_back_what_was_framed() {
        let bytes = framed(&[b"a", b"", b"hello world"]);
        let scanned = scan(&bytes, RECORD_LEN_MAX_DEFAULT);
        assert_eq!(scanned.damage, None);
        assert_eq!(scanned.good_len, bytes.len());
        let payloads: Vec<&[u8]> = scanned.payloads.iter().map(|r| &bytes[r.clone()]).collect();
        assert_eq!(payloads, vec![&b"a"[..], &b""[..], &b"hello world"[..]]);
    }

    #[test]
    fn zero_filled_tail_is_damage_not_empty_records() {
        let mut bytes = framed(&[b"abc"]);
        let good = bytes.len();
        bytes.extend_from_slice(&[0u8; 64]);
        let scanned = scan(&bytes, RECORD_LEN_MAX_DEFAULT);
        assert_eq!(scanned.good_len, good);
        assert_eq!(scanned.damage, Some((good, DamageKind::BadChecksum)));
    }

    #[test]
    fn oversize_length_field_is_reported_as_such() {
        let mut bytes = framed(&[b"abc"]);
        let good = bytes.len();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4, 5]);
        let scanned = scan(&bytes, 1024);
        assert_eq!(scanned.damage, Some((good, DamageKind::OversizeLength)));
    }

    #[test]
    fn mem_journal_torn_commit_keeps_whole_records_and_drops_the_torn_one() {
        let storage = MemStorage::new();
        let (mut journal, _) = MemJournal::open(storage.clone(), JournalConfig::default()).unwrap();
        journal.append(b"one").unwrap();
        journal.commit().unwrap();
        journal.append(b"two").unwrap();
        journal.append(b"three").unwrap();
        journal.tear_next_commit(13);
        assert!(journal.commit().is_err());
        assert!(matches!(journal.append(b"x"), Err(JournalError::Poisoned)));
        drop(journal);
        let (mut journal, report) = MemJournal::open(storage, JournalConfig::default()).unwrap();
        // 13 bytes of the failed batch = all of "two" (8 + 3) and 2 bytes of "three":
        // the whole record survives (it was never acknowledged, but it is intact).
        assert_eq!(report.n_records, 2);
        assert_eq!(report.damage.map(|d| d.kind), Some(DamageKind::Torn));
        let records = journal.read_all().unwrap();
        assert_eq!(
            records.iter().collect::<Vec<_>>(),
            vec![&b"one"[..], &b"two"[..]]
        );
    }
}
