//! The data directory: one sled database holding the Raft log, the vote, the
//! last snapshot, and the node's identity.
//!
//! The identity (cluster name and node id) is written once, when the
//! directory is created, and checked on every start: starting a node on the
//! data of another cluster or another node would silently fork history, so
//! rosterd refuses with a one-line reason instead.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::codec;

/// Trees of the sled database.
const LOGS: &str = "logs";
const META: &str = "meta";
const SNAPSHOT: &str = "snapshot";

/// Keys in the `meta` tree.
pub(crate) const KEY_IDENTITY: &[u8] = b"identity";
pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_PURGED: &[u8] = b"last_purged";

/// Version of the on-disk layout; bumped on incompatible changes.
const FORMAT: u32 = 1;

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

/// An open data directory.
#[derive(Clone)]
pub struct Disk {
    pub db: sled::Db,
    pub logs: sled::Tree,
    pub meta: sled::Tree,
    pub snapshot: sled::Tree,
    pub dir: PathBuf,
    /// Highest log index known committed, kept current by the log store for
    /// status reports (openraft's metrics do not carry it).
    pub committed: Arc<AtomicU64>,
}

impl Disk {
    /// Opens (or creates) the data directory of `node_id` in `cluster_name`.
    /// Returns the disk and whether it was freshly created.
    pub fn open(dir: &Path, cluster_name: &str, node_id: u64) -> Result<(Disk, bool), DataDirError> {
        let corrupt = |reason: String| DataDirError::Corrupt {
            dir: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| DataDirError::Open {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        // sled opens an emptied or garbage `db` file as an empty database
        // (checked with sled 0.34.7). So if its files were here before, a
        // missing identity below means the data was lost, not that the node
        // is new: starting fresh would make it forget its vote and log, and
        // it could then vote twice in a term or elect a leader that lacks
        // committed entries.
        let had_files = dir.join("db").exists() || dir.join("conf").exists();
        let db = open_sled(dir)?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| corrupt(e.to_string()));
        let disk = Disk {
            logs: tree(LOGS)?,
            meta: tree(META)?,
            snapshot: tree(SNAPSHOT)?,
            db: db.clone(),
            dir: dir.to_path_buf(),
            committed: Arc::new(AtomicU64::new(0)),
        };
        let stored = disk.meta.get(KEY_IDENTITY).map_err(|e| corrupt(e.to_string()))?;
        let fresh = match stored {
            Some(bytes) => {
                let found: Identity = codec::decode("identity", &bytes).map_err(|e| corrupt(e.to_string()))?;
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
                disk.check_integrity().map_err(corrupt)?;
                false
            }
            None => {
                if had_files {
                    return Err(corrupt(
                        "storage files present but no identity record (damaged, emptied, or its first start was \
                         interrupted); wipe it to rejoin as a new node"
                            .into(),
                    ));
                }
                if !disk.logs.is_empty() || !disk.snapshot.is_empty() || !disk.meta.is_empty() {
                    return Err(corrupt("Raft data present but no identity record".into()));
                }
                let identity = Identity {
                    format: FORMAT,
                    cluster_name: cluster_name.to_string(),
                    node_id,
                };
                let bytes = codec::encode("identity", &identity).map_err(|e| corrupt(e.to_string()))?;
                disk.meta
                    .insert(KEY_IDENTITY, bytes)
                    .map_err(|e| corrupt(e.to_string()))?;
                disk.db.flush().map_err(|e| corrupt(e.to_string()))?;
                true
            }
        };
        Ok((disk, fresh))
    }

    /// Makes every write so far durable (one fsync of the whole database).
    ///
    /// All storage code flushes through here, never with sled's
    /// `flush_async`: in sled 0.34.7 `flush_async` parks the flush on a
    /// thread of sled's own I/O pool, and the buffer write that flush waits
    /// for is queued on the same pool, which only grows when more than 7
    /// jobs wait. So 7 concurrent `flush_async` calls in one process hang
    /// forever (spacejam/sled#1241, #1308; reproduced with sled 0.34.7 here).
    /// The log flusher, `save_vote`, `save_committed` and snapshot writes
    /// of one node can overlap, and several nodes in one process (tests,
    /// simulator) multiply them. The blocking `flush` on tokio's blocking
    /// pool waits outside sled's pool, so the writes always get a thread.
    pub async fn flush(&self) -> sled::Result<()> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(result) => result.map(|_| ()),
            Err(e) => Err(sled::Error::ReportableBug(format!("flush task failed: {e}"))),
        }
    }

    /// Cheap start-up checks: the vote, the commit marker, the first and last
    /// log entries and the snapshot metadata decode. A full scan would make
    /// start-up time grow with the log; these catch a truncated or foreign
    /// file without it.
    fn check_integrity(&self) -> Result<(), String> {
        use super::{Entry, LogId, SnapshotMeta, Vote};
        let get = |tree: &sled::Tree, key: &[u8]| tree.get(key).map_err(|e| e.to_string());
        if let Some(v) = get(&self.meta, KEY_VOTE)? {
            codec::decode::<Vote>("vote", &v).map_err(|e| e.to_string())?;
        }
        for key in [KEY_COMMITTED, KEY_PURGED] {
            if let Some(v) = get(&self.meta, key)? {
                codec::decode::<Option<LogId>>("log id", &v).map_err(|e| e.to_string())?;
            }
        }
        for item in [self.logs.first(), self.logs.last()] {
            if let Some((k, v)) = item.map_err(|e| e.to_string())? {
                let index = log_index_of(&k).ok_or_else(|| "log key is not 8 bytes".to_string())?;
                let entry: Entry = codec::decode("log entry", &v).map_err(|e| e.to_string())?;
                if entry.log_id.index != index {
                    return Err(format!("log entry at key {index} says index {}", entry.log_id.index));
                }
            }
        }
        if let Some(v) = get(&self.snapshot, super::state_machine::KEY_SNAPSHOT_META)? {
            codec::decode::<SnapshotMeta>("snapshot meta", &v).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Opens sled, turning its failures (including a panic on a mangled file,
/// which sled 0.34 can raise) into one-line errors.
fn open_sled(dir: &Path) -> Result<sled::Db, DataDirError> {
    let config = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput);
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || config.open()));
    std::panic::set_hook(previous_hook);
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Io(e))) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") => {
            Err(DataDirError::Open {
                dir: dir.to_path_buf(),
                reason: format!("another process holds it ({e})"),
            })
        }
        Ok(Err(sled::Error::Io(e))) => Err(DataDirError::Open {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        }),
        Ok(Err(e)) => Err(DataDirError::Corrupt {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "storage engine failed while reading it".into());
            Err(DataDirError::Corrupt {
                dir: dir.to_path_buf(),
                reason,
            })
        }
    }
}

/// Log keys are big-endian indexes, so sled's byte order is log order.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(crate) fn log_index_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}
