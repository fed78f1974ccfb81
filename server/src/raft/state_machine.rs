//! Adapts the pure [`State`](crate::state::State) to openraft's
//! `RaftStateMachine`, and keeps the latest snapshot in sled.
//!
//! The state lives in memory. On restart it is rebuilt from the last
//! snapshot, and openraft re-applies the committed log after it (the log
//! store persists the commit point). Snapshots are what make that bounded:
//! one is built every `snapshot_every` entries, and the log before it is
//! purged.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::codec;
use super::disk::Disk;
use super::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::state::command::Response;
use crate::state::State;

pub(crate) const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// What a snapshot carries besides the state itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: Vec<u8>,
}

/// Applied state of one node.
#[derive(Debug, Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: State,
}

/// Shared handle: openraft applies through it, the API reads through it.
#[derive(Clone)]
pub struct StateMachineStore {
    applied: Arc<RwLock<Applied>>,
    disk: Disk,
    /// Revision after the last applied entry, for waiters (watches later).
    revision: watch::Sender<u64>,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
}

impl StateMachineStore {
    /// Opens the store, restoring the last snapshot from `disk` if any.
    pub fn open(disk: Disk) -> Result<Self, StorageError> {
        let mut applied = Applied::default();
        if let Some(bytes) = disk
            .snapshot
            .get(KEY_SNAPSHOT_DATA)
            .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?
        {
            applied = decode_snapshot(&bytes)?;
        }
        let (revision, _) = watch::channel(applied.state.revision());
        Ok(Self {
            applied: Arc::new(RwLock::new(applied)),
            disk,
            revision,
            snapshot_seq: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        })
    }

    /// Read access to the applied state. Hold it briefly: apply waits on it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A poisoned lock means a panic while applying, which the state
        // machine is built never to do; reading the data is still sound.
        self.applied.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribe to the revision after each applied batch.
    pub fn revision_watch(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    async fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        let err = |e: &dyn std::error::Error| {
            StorageIOError::write_snapshot(signature.clone(), AnyError::error(e.to_string()))
        };
        let meta_bytes = codec::encode("snapshot meta", meta).map_err(|e| err(&e))?;
        let mut batch = sled::Batch::default();
        batch.insert(KEY_SNAPSHOT_META, meta_bytes);
        batch.insert(KEY_SNAPSHOT_DATA, data);
        self.disk.snapshot.apply_batch(batch).map_err(|e| err(&e))?;
        self.disk.db.flush_async().await.map_err(|e| err(&e))?;
        Ok(())
    }
}

fn decode_snapshot(bytes: &[u8]) -> Result<Applied, StorageError> {
    let err = |e: String| StorageError::from(StorageIOError::read_snapshot(None, AnyError::error(e)));
    let body: SnapshotBody = codec::decode("snapshot", bytes).map_err(|e| err(e.to_string()))?;
    let state = State::from_snapshot_bytes(&body.state).map_err(|e| err(e.to_string()))?;
    Ok(Applied {
        last_applied: body.last_applied,
        membership: body.membership,
        state,
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (meta, data) = {
            let applied = self.read();
            let body = SnapshotBody {
                last_applied: applied.last_applied,
                membership: applied.membership.clone(),
                state: applied.state.to_snapshot_bytes(),
            };
            let data = codec::encode("snapshot", &body)
                .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
            let seq = self.snapshot_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let snapshot_id = match applied.last_applied {
                Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, seq),
                None => format!("0-0-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        self.persist_snapshot(&meta, &data).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let revision = {
            let mut applied = self.applied.write().unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::None,
                    EntryPayload::Normal(ref command) => applied.state.apply(entry.log_id.index, command),
                    EntryPayload::Membership(ref membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                        Response::None
                    }
                };
                responses.push(response);
            }
            applied.state.revision()
        };
        self.revision.send_replace(revision);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut restored = decode_snapshot(&data)?;
        // The metadata openraft hands us is authoritative for where the
        // snapshot sits in the log.
        restored.last_applied = meta.last_log_id;
        restored.membership = meta.last_membership.clone();
        self.persist_snapshot(meta, &data).await?;
        let revision = restored.state.revision();
        *self.applied.write().unwrap_or_else(|p| p.into_inner()) = restored;
        self.revision.send_replace(revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let err = |e: String| StorageError::from(StorageIOError::read_snapshot(None, AnyError::error(e)));
        let meta = self
            .disk
            .snapshot
            .get(KEY_SNAPSHOT_META)
            .map_err(|e| err(e.to_string()))?;
        let data = self
            .disk
            .snapshot
            .get(KEY_SNAPSHOT_DATA)
            .map_err(|e| err(e.to_string()))?;
        match (meta, data) {
            (Some(meta), Some(data)) => {
                let meta: SnapshotMeta = codec::decode("snapshot meta", &meta).map_err(|e| err(e.to_string()))?;
                Ok(Some(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data.to_vec())),
                }))
            }
            _ => Ok(None),
        }
    }
}
