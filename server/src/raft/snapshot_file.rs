//! rosterd's [`SnapshotStore`]: the latest snapshot as one sealed file,
//! `<data>/snapshot`, replaced atomically.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::{AnyError, StorageIOError};

use super::files::{seal, unseal, write_atomic};
use super::state_machine::{SnapshotSave, SnapshotStore};
use super::{codec, LogId, SnapshotMeta, StorageError};

const MAGIC: &[u8; 8] = b"RSTRSNAP";
pub(crate) const FILE: &str = "snapshot";

/// The snapshot file of a data dir.
pub struct FileSnapshots {
    dir: PathBuf,
    /// The last log id of the stored snapshot (`None`: there is none).
    /// Held across a save's check and write (see [`SnapshotStore::save`])
    /// and across loads, so neither sees the other half-done.
    stored: Arc<Mutex<Option<Option<LogId>>>>,
}

impl FileSnapshots {
    /// Opens the snapshot store of `dir`, checking the file if there is one.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let stored = Self::read(dir)?.map(|(meta, _)| meta.last_log_id);
        Ok(Self {
            dir: dir.to_path_buf(),
            stored: Arc::new(Mutex::new(stored)),
        })
    }

    /// Reads and checks the file: its metadata and data, if there is one.
    pub fn read(dir: &Path) -> Result<Option<(SnapshotMeta, Vec<u8>)>, String> {
        let bytes = match std::fs::read(dir.join(FILE)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let payload = unseal(MAGIC, &bytes).map_err(|e| format!("snapshot file: {e}"))?;
        let meta_len = payload
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or("snapshot file: too short")? as usize;
        let meta = payload
            .get(8..8 + meta_len)
            .ok_or("snapshot file: metadata cut short")?;
        let meta: SnapshotMeta = codec::decode("snapshot meta", meta).map_err(|e| e.to_string())?;
        Ok(Some((meta, payload[8 + meta_len..].to_vec())))
    }

    fn read_locked(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        let _guard = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        Self::read(&self.dir).map_err(|e| StorageIOError::read_snapshot(None, AnyError::error(e)).into())
    }
}

impl SnapshotStore for FileSnapshots {
    fn load_data(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.read_locked()?.map(|(_, data)| data))
    }

    fn load(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        self.read_locked()
    }

    fn save<'a>(&'a self, meta: &'a SnapshotMeta, data: &'a [u8]) -> SnapshotSave<'a> {
        Box::pin(async move {
            let signature = Some(meta.signature());
            let err =
                |e: String| StorageError::from(StorageIOError::write_snapshot(signature.clone(), AnyError::error(e)));
            let meta_bytes = codec::encode("snapshot meta", meta).map_err(|e| err(e.to_string()))?;
            let mut payload = Vec::with_capacity(8 + meta_bytes.len() + data.len());
            payload.extend_from_slice(&(meta_bytes.len() as u64).to_le_bytes());
            payload.extend_from_slice(&meta_bytes);
            payload.extend_from_slice(data);
            let sealed = seal(MAGIC, &payload);
            drop(payload);
            let dir = self.dir.clone();
            let stored = Arc::clone(&self.stored);
            let last_log_id = meta.last_log_id;
            // The check and the write under one lock, off the async threads.
            tokio::task::spawn_blocking(move || {
                let mut stored = stored.lock().unwrap_or_else(|p| p.into_inner());
                if stored.is_some_and(|s| s > last_log_id) {
                    return Ok(());
                }
                write_atomic(&dir, FILE, &sealed).map_err(|e| e.to_string())?;
                *stored = Some(last_log_id);
                Ok(())
            })
            .await
            .map_err(|e| err(e.to_string()))?
            .map_err(err)
        })
    }
}
