//! The data directory: the Raft log (`wal/`, see [`super::wal`]), the last
//! snapshot (`snapshot`), the node's identity (`identity`) and a lock file.
//!
//! The identity (cluster name and node id) is written once, when the
//! directory is created, and checked on every start: starting a node on the
//! data of another cluster or another node would silently fork history, so
//! rosterd refuses with a one-line reason instead.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::codec;
use super::files::{seal, unseal, write_atomic};
use super::snapshot_file::{self, FileSnapshots};
use super::wal::{Wal, WalError};

const IDENTITY: &str = "identity";
const IDENTITY_MAGIC: &[u8; 8] = b"RSTRID\0\0";
const WAL_DIR: &str = "wal";
const LOCK: &str = "lock";

/// Version of the on-disk layout; bumped on incompatible changes.
/// 1: sled (until 2026-11); 2: segment log + snapshot file.
const FORMAT: u32 = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format: u32,
    pub cluster_name: String,
    pub node_id: u64,
}

/// Why a data directory cannot be used. Each message is one line that tells
/// an operator what is wrong and with what.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data dir {dir} belongs to cluster '{found_cluster}' node {found_node}, not cluster '{want_cluster}' node {want_node}; use another --data-dir or wipe this one")]
    Foreign {
        dir: PathBuf,
        found_cluster: String,
        found_node: u64,
        want_cluster: String,
        want_node: u64,
    },
    #[error("data dir {dir} has on-disk format {found}, this rosterd reads format {FORMAT}")]
    Format { dir: PathBuf, found: u32 },
    #[error("data dir {dir} is corrupt: {reason}")]
    Corrupt { dir: PathBuf, reason: String },
    #[error("data dir {dir} cannot be opened: {reason}")]
    Open { dir: PathBuf, reason: String },
}

/// An open data directory. Clones share it; the lock is released and the
/// log writer stops when the last clone is dropped.
#[derive(Clone)]
pub struct Disk {
    pub dir: PathBuf,
    pub identity: Identity,
    pub wal: Arc<Wal>,
    pub snapshots: Arc<FileSnapshots>,
    /// Highest log index known committed, kept current by the log store for
    /// status reports (openraft's metrics do not carry it).
    pub committed: Arc<AtomicU64>,
    _lock: Arc<File>,
}

impl Disk {
    /// Opens (or creates) the data directory of `node_id` in `cluster_name`.
    /// Returns the disk and whether it was freshly created.
    pub fn open(dir: &Path, cluster_name: &str, node_id: u64) -> Result<(Disk, bool), DataDirError> {
        let corrupt = |reason: String| DataDirError::Corrupt {
            dir: dir.to_path_buf(),
            reason,
        };
        let cannot_open = |reason: String| DataDirError::Open {
            dir: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| cannot_open(e.to_string()))?;
        let lock = File::create(dir.join(LOCK)).map_err(|e| cannot_open(e.to_string()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(cannot_open("another process holds it".into())),
            Err(TryLockError::Error(e)) => return Err(cannot_open(format!("locking it: {e}"))),
        }
        let identity_path = dir.join(IDENTITY);
        let (identity, fresh) = match std::fs::read(&identity_path) {
            Ok(bytes) => {
                let found: Identity = unseal(IDENTITY_MAGIC, &bytes)
                    .and_then(|payload| codec::decode("identity", payload).map_err(|e| e.to_string()))
                    .map_err(|e| corrupt(format!("identity record: {e}")))?;
                if found.format != FORMAT {
                    return Err(DataDirError::Format {
                        dir: dir.to_path_buf(),
                        found: found.format,
                    });
                }
                if found.cluster_name != cluster_name || found.node_id != node_id {
                    return Err(DataDirError::Foreign {
                        dir: dir.to_path_buf(),
                        found_cluster: found.cluster_name,
                        found_node: found.node_id,
                        want_cluster: cluster_name.to_string(),
                        want_node: node_id,
                    });
                }
                (found, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Files of sled (format 1) mean an older rosterd's data.
                if dir.join("db").exists() || dir.join("conf").exists() {
                    return Err(DataDirError::Format {
                        dir: dir.to_path_buf(),
                        found: 1,
                    });
                }
                // Log or snapshot without an identity means the data was
                // damaged, not that the node is new: starting fresh would
                // make it forget its vote and log, and it could then vote
                // twice in a term or elect a leader that lacks committed
                // entries.
                let has_log = std::fs::read_dir(dir.join(WAL_DIR))
                    .map(|mut entries| entries.next().is_some())
                    .unwrap_or(false);
                if has_log || dir.join(snapshot_file::FILE).exists() {
                    return Err(corrupt(
                        "storage files present but no identity record (damaged, emptied, or its first start was \
                         interrupted); wipe it to rejoin as a new node"
                            .into(),
                    ));
                }
                let identity = Identity {
                    format: FORMAT,
                    cluster_name: cluster_name.to_string(),
                    node_id,
                };
                let payload = codec::encode("identity", &identity).map_err(|e| corrupt(e.to_string()))?;
                write_atomic(dir, IDENTITY, &seal(IDENTITY_MAGIC, &payload)).map_err(|e| cannot_open(e.to_string()))?;
                (identity, true)
            }
            Err(e) => return Err(cannot_open(format!("reading the identity record: {e}"))),
        };
        let wal = Wal::open(&dir.join(WAL_DIR)).map_err(|e| match e {
            WalError::Io(e) => cannot_open(format!("opening the log: {e}")),
            corruption => corrupt(corruption.to_string()),
        })?;
        let snapshots = FileSnapshots::open(dir).map_err(corrupt)?;
        Ok((
            Disk {
                dir: dir.to_path_buf(),
                identity,
                wal: Arc::new(wal),
                snapshots: Arc::new(snapshots),
                committed: Arc::new(AtomicU64::new(0)),
                _lock: Arc::new(lock),
            },
            fresh,
        ))
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> std::io::Result<()> {
        self.wal.sync().await
    }
}
