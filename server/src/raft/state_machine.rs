//! Adapts the pure [`State`](crate::state::State) to openraft's
//! `RaftStateMachine`, and keeps the latest snapshot in a [`SnapshotStore`]:
//! a file ([`super::snapshot_file::FileSnapshots`]) in rosterd, a simulated
//! disk in the simulator.
//!
//! The state lives in memory. On restart it is rebuilt from the last
//! snapshot, and openraft re-applies the committed log after it (as far as
//! the log store's commit marker says; the rest once the leader tells). Snapshots are what make that bounded:
//! one is built every `snapshot_every` entries, and the log before it is
//! purged.

use std::future::Future;
use std::io::Cursor;
use std::pin::Pin;
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
    snapshots: Arc<dyn SnapshotStore>,
    /// Revision after the last applied entry, for waiters (watches later).
    revision: watch::Sender<u64>,
    snapshot_seq: Arc<std::sync::atomic::AtomicU64>,
}

impl StateMachineStore {
    /// Opens the store, restoring the last snapshot from `disk` if any.
    pub fn open(disk: Disk) -> Result<Self, StorageError> {
        Self::with_snapshot_store(disk.snapshots)
    }

    /// Opens the store over any snapshot store, restoring its snapshot if
    /// any.
    pub fn with_snapshot_store(snapshots: Arc<dyn SnapshotStore>) -> Result<Self, StorageError> {
        let mut applied = Applied::default();
        if let Some(bytes) = snapshots.load_data()? {
            applied = decode_snapshot(&bytes)?;
        }
        let (revision, _) = watch::channel(applied.state.revision());
        Ok(Self {
            applied: Arc::new(RwLock::new(applied)),
            snapshots,
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

    /// Stores `meta` and `data` as the current snapshot, unless the stored one
    /// is newer (see [`SnapshotStore::save`]).
    async fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        self.snapshots.save(meta, data).await
    }
}

/// Boxed future of a [`SnapshotStore`] write.
pub type SnapshotSave<'a> = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + 'a>>;

/// Where the state machine keeps its latest snapshot (metadata and data).
pub trait SnapshotStore: Send + Sync + 'static {
    /// The stored snapshot data, if any (read when the store opens).
    fn load_data(&self) -> Result<Option<Vec<u8>>, StorageError>;

    /// The stored snapshot, metadata and data read together: a snapshot
    /// build persisting in another task between two plain reads would pair
    /// old metadata with new data, and a follower installing that would take
    /// the state for an older log position and apply some entries twice.
    fn load(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError>;

    /// Stores `meta` and `data` as the current snapshot, unless the stored
    /// one is newer; durable when the future completes.
    ///
    /// openraft builds snapshots in a spawned task while its state machine
    /// worker may install a (newer) snapshot from the leader. A build that
    /// read the state before the install and writes after it would otherwise
    /// replace the installed snapshot with an older one, although openraft
    /// has already purged the log up to the installed one: after a restart
    /// the node would lack the entries between the two, and it would send
    /// the older snapshot to followers. openraft itself ignores a built
    /// snapshot that is not newer than its current one, so skipping the
    /// write keeps disk and openraft in step. The check and the write must
    /// be atomic, so two writers cannot interleave between them.
    fn save<'a>(&'a self, meta: &'a SnapshotMeta, data: &'a [u8]) -> SnapshotSave<'a>;
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
        Ok(self.snapshots.load()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
