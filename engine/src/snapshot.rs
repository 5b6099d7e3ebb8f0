//! Shard snapshots: the whole [`ShardState`] written atomically, so recovery replays
//! only the journal records after it.
//!
//! # Format
//! ```text
//! [8 bytes magic "VTXSNAP4"][u64 LE last_seq][u32 LE payload length][u32 LE crc32]
//! [payload: postcard ShardSnapshot]
//! ```
//! The crc32 covers `last_seq`, the length and the payload.
//!
//! # Stores
//! A [`SnapshotStore`] keeps framed snapshots by `last_seq`:
//! - [`FileSnapshotStore`]: one file per snapshot in a directory,
//!   `snapshot-<seq, 20 digits>.snap`, written as a temporary file, fsynced, renamed
//!   into place and the directory fsynced, so a crash leaves either the old set of
//!   snapshots or the new one, never a half-written file under a snapshot name.
//! - [`MemSnapshotStore`]: a shared map, for the simulator and tests.
//!
//! [`load_latest`] tries snapshots newest first and skips (with a warning, and a line
//! in its report) any that is unreadable or fails its checksum; the journal holds
//! every command since the start, so an older snapshot, or none, still recovers.
//!
//! # Invariants
//! - A snapshot is only taken of a state whose commands are all committed to the
//!   journal (the engine snapshots after commit and apply).
//! - Decoding never panics on any bytes; a snapshot is used only if its checksum
//!   matches and its `last_seq` equals the one in its name and in its payload.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::journal::sync_parent_dir;
use crate::state::{RestoreError, ShardConfig, ShardSnapshot, ShardState};

/// Magic bytes at the start of every snapshot.
/// Version 2 added the day-ahead auctions to [`ShardSnapshot`], version 3 each
/// auction's own rules, version 4 the open block families; an older snapshot is
/// skipped like any unreadable one and the journal replayed instead.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"VTXSNAP4";

/// Header bytes before the payload.
pub const SNAPSHOT_HEADER_LEN: usize = 24;

/// Errors reading, writing or decoding snapshots.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The operating system refused a read, write, sync, rename or listing.
    #[error("snapshot I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Not a snapshot, or damaged beyond framing.
    #[error("snapshot damaged: {0}")]
    Damaged(&'static str),
    /// Framing and checksum fine but the payload does not decode.
    #[error("snapshot payload does not decode: {0}")]
    Decode(#[from] postcard::Error),
    /// The decoded state cannot be restored.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// No snapshot with this seq in the store.
    #[error("no snapshot at seq {0}")]
    Missing(u64),
}

/// Frames a shard snapshot for storage.
///
/// # Errors
/// Only if serialization fails, which these types cannot cause.
pub fn encode_snapshot(snapshot: &ShardSnapshot) -> Result<Vec<u8>, postcard::Error> {
    let payload = postcard::to_allocvec(snapshot)?;
    let len = u32::try_from(payload.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
    let seq_bytes = snapshot.last_seq.to_le_bytes();
    let len_bytes = len.to_le_bytes();
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + payload.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&snapshot_crc(seq_bytes, len_bytes, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn snapshot_crc(seq_bytes: [u8; 8], len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq_bytes);
    hasher.update(&len_bytes);
    hasher.update(payload);
    hasher.finalize()
}

/// Checks framing and checksum and decodes a stored snapshot. Never panics.
///
/// # Errors
/// [`SnapshotError::Damaged`] for bad magic, short data, trailing data or a checksum
/// mismatch; [`SnapshotError::Decode`] for a payload that does not decode.
pub fn decode_snapshot(bytes: &[u8]) -> Result<ShardSnapshot, SnapshotError> {
    let header = bytes
        .get(..SNAPSHOT_HEADER_LEN)
        .ok_or(SnapshotError::Damaged("short header"))?;
    if header[..8] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::Damaged("bad magic"));
    }
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&header[8..16]);
    let mut len_bytes = [0u8; 4];
    len_bytes.copy_from_slice(&header[16..20]);
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&header[20..24]);
    let payload = &bytes[SNAPSHOT_HEADER_LEN..];
    if payload.len() as u64 != u64::from(u32::from_le_bytes(len_bytes)) {
        return Err(SnapshotError::Damaged("length does not match the data"));
    }
    if snapshot_crc(seq_bytes, len_bytes, payload) != u32::from_le_bytes(crc_bytes) {
        return Err(SnapshotError::Damaged("checksum mismatch"));
    }
    let snapshot: ShardSnapshot = postcard::from_bytes(payload)?;
    if snapshot.last_seq != u64::from_le_bytes(seq_bytes) {
        return Err(SnapshotError::Damaged(
            "header seq differs from payload seq",
        ));
    }
    Ok(snapshot)
}

/// Storage of framed snapshots, keyed by the seq of the last command they contain.
pub trait SnapshotStore: Send {
    /// Stores `bytes` as the snapshot at `seq`, atomically and durably.
    ///
    /// # Errors
    /// I/O errors; a failed save leaves earlier snapshots intact.
    fn save(&mut self, seq: u64, bytes: &[u8]) -> Result<(), SnapshotError>;

    /// The seqs of stored snapshots, ascending.
    ///
    /// # Errors
    /// I/O errors listing the store.
    fn list(&self) -> Result<Vec<u64>, SnapshotError>;

    /// The bytes of the snapshot at `seq`.
    ///
    /// # Errors
    /// I/O errors, or [`SnapshotError::Missing`].
    fn read(&self, seq: u64) -> Result<Vec<u8>, SnapshotError>;

    /// Deletes the snapshot at `seq` (no error if absent).
    ///
    /// # Errors
    /// I/O errors.
    fn remove(&mut self, seq: u64) -> Result<(), SnapshotError>;
}

/// A snapshot that [`load_latest`] skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedSnapshot {
    /// Its seq.
    pub seq: u64,
    /// Why it was skipped.
    pub reason: String,
}

/// Loads the newest snapshot that reads, checks and decodes, skipping damaged ones.
/// Returns `None` when no usable snapshot exists (recover from the journal alone).
///
/// # Errors
/// Listing fails, or a valid snapshot cannot be restored with `config` (another
/// configuration: an operator error, not damage, so it is not skipped).
pub fn load_latest(
    store: &dyn SnapshotStore,
    config: ShardConfig,
) -> Result<(Option<ShardState>, Vec<SkippedSnapshot>), SnapshotError> {
    let mut skipped = Vec::new();
    for seq in store.list()?.into_iter().rev() {
        let decoded = store.read(seq).and_then(|bytes| decode_snapshot(&bytes));
        let snapshot = match decoded {
            Ok(snapshot) if snapshot.last_seq == seq => snapshot,
            Ok(_) => {
                tracing::warn!(seq, "snapshot seq differs from its name; skipping it");
                skipped.push(SkippedSnapshot {
                    seq,
                    reason: "seq differs from its name".into(),
                });
                continue;
            }
            Err(error) => {
                tracing::warn!(seq, %error, "snapshot unusable; trying an older one");
                skipped.push(SkippedSnapshot {
                    seq,
                    reason: error.to_string(),
                });
                continue;
            }
        };
        let state = ShardState::from_snapshot(config, &snapshot)?;
        return Ok((Some(state), skipped));
    }
    Ok((None, skipped))
}

/// Snapshots in a directory, one file each (see the module docs).
#[derive(Debug)]
pub struct FileSnapshotStore {
    dir: PathBuf,
}

const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";

impl FileSnapshotStore {
    /// Uses (creating if needed) `dir` for snapshots.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn open(dir: &Path) -> Result<FileSnapshotStore, SnapshotError> {
        fs::create_dir_all(dir).map_err(|source| SnapshotError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(FileSnapshotStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir
            .join(format!("{SNAPSHOT_PREFIX}{seq:020}{SNAPSHOT_SUFFIX}"))
    }
}

fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SNAPSHOT_PREFIX)?
        .strip_suffix(SNAPSHOT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl SnapshotStore for FileSnapshotStore {
    fn save(&mut self, seq: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
        let path = self.path_of(seq);
        let tmp = path.with_extension("tmp");
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Io { path, source }
        };
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_parent_dir(&path).map_err(io_err(&self.dir))?;
        Ok(())
    }

    fn list(&self) -> Result<Vec<u64>, SnapshotError> {
        let io_err = |source| SnapshotError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut seqs = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            if let Some(seq) = entry.file_name().to_str().and_then(parse_snapshot_name) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    fn read(&self, seq: u64) -> Result<Vec<u8>, SnapshotError> {
        let path = self.path_of(seq);
        fs::read(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                SnapshotError::Missing(seq)
            } else {
                SnapshotError::Io { path, source }
            }
        })
    }

    fn remove(&mut self, seq: u64) -> Result<(), SnapshotError> {
        let path = self.path_of(seq);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SnapshotError::Io { path, source }),
        }
    }
}

/// Snapshots in shared memory: survives the engine being dropped; clones share it.
#[derive(Clone, Debug, Default)]
pub struct MemSnapshotStore {
    snapshots: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
}

impl MemSnapshotStore {
    /// An empty store.
    pub fn new() -> MemSnapshotStore {
        MemSnapshotStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Vec<u8>>> {
        self.snapshots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the bytes of one snapshot (fault injection).
    pub fn set_bytes(&self, seq: u64, bytes: Vec<u8>) {
        self.lock().insert(seq, bytes);
    }
}

impl SnapshotStore for MemSnapshotStore {
    fn save(&mut self, seq: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.lock().insert(seq, bytes.to_vec());
        Ok(())
    }

    fn list(&self) -> Result<Vec<u64>, SnapshotError> {
        Ok(self.lock().keys().copied().collect())
    }

    fn read(&self, seq: u64) -> Result<Vec<u8>, SnapshotError> {
        self.lock()
            .get(&seq)
            .cloned()
            .ok_or(SnapshotError::Missing(seq))
    }

    fn remove(&mut self, seq: u64) -> Result<(), SnapshotError> {
        self.lock().remove(&seq);
        Ok(())
    }
}
