//! Watch events and the bounded history they are kept in.
//!
//! Every entry that changes the watched state emits at least one [`Event`],
//! and all of them carry that entry's revision; an entry that emits none
//! does not move the revision. (Bookkeeping that is not watched — a lease's
//! remaining TTL and renewal count, a candidate's progress — changes without
//! a revision, as a lease's TTL does in etcd.)
//!
//! The history keeps the newest events, whole revisions at a time, within
//! [`limits::MAX_HISTORY_EVENTS`] and [`limits::MAX_HISTORY_BYTES`]. It is
//! part of the state and of its snapshot, so every replica, including one
//! restored from a snapshot, serves the same events: a watcher can reconnect
//! to any node and resume from its last revision without a gap or a
//! duplicate. A watcher further behind than the history gets
//! [`Compacted`] and must re-read the state.
//!
//! Filtering (key prefixes, coordination events only) is left to the caller:
//! the watch layer knows what each watcher asked for, and filtering there
//! keeps this structure a plain log.

use std::collections::VecDeque;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::command::KeyValue;
use crate::limits;

/// Why a lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseEndReason {
    /// `LeaseRevoke`: on purpose.
    Revoked,
    /// `LeaseExpire`: the leader saw no renewal for a TTL.
    Expired,
}

/// Why a candidate stopped holding or waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseReason {
    /// The candidate resigned.
    Resigned,
    /// The candidate's lease ended (revoked or expired).
    LeaseEnded,
    /// A switchover moved the grant to another candidate; the released
    /// holder is back in the waiting queue.
    Switchover,
    /// The group was deleted or its specs changed (role dropped, capacity
    /// lowered: then the holder is back in the waiting queue).
    GroupChanged,
}

/// One change, as a watcher sees it. All events of one revision happened
/// atomically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A key was written; the pair as it is after the write.
    Put(KeyValue),
    /// A key was deleted (by a delete, or because its lease ended); the pair
    /// as it was.
    Delete(KeyValue),
    LeaseGranted {
        id: i64,
        ttl_ms: u64,
    },
    /// Comes before the deletes, releases and grants it caused, in the same
    /// revision.
    LeaseEnded {
        id: i64,
        reason: LeaseEndReason,
    },
    /// A candidate joined a role's waiting queue, or changed its lease or
    /// priority (waiting or holding).
    Campaigned {
        group: String,
        role: String,
        candidate: String,
    },
    /// A waiting candidate left the queue without being granted.
    Withdrawn {
        group: String,
        role: String,
        candidate: String,
        reason: ReleaseReason,
    },
    /// A candidate now holds a slot of the role, with this fencing token.
    Granted {
        group: String,
        role: String,
        candidate: String,
        lease: i64,
        token: u64,
    },
    /// A holder lost its slot; its token is no longer accepted by fences.
    Released {
        group: String,
        role: String,
        candidate: String,
        token: u64,
        reason: ReleaseReason,
    },
    /// A node was registered, updated, deregistered, or went not alive.
    NodeChanged {
        id: String,
    },
    /// A group was created, updated or deleted.
    GroupChanged {
        name: String,
    },
}

impl Event {
    /// Estimated memory of the event, for [`limits::MAX_HISTORY_BYTES`]: the
    /// variable-length data plus a fixed overhead. Only a function of the
    /// event, so every replica evicts the same revisions.
    pub fn approx_bytes(&self) -> usize {
        const OVERHEAD: usize = 64;
        let names = |a: &str, b: &str, c: &str| a.len() + b.len() + c.len();
        OVERHEAD
            + match self {
                Event::Put(kv) | Event::Delete(kv) => kv.key.len() + kv.value.len(),
                Event::LeaseGranted { .. } | Event::LeaseEnded { .. } => 0,
                Event::Campaigned { group, role, candidate }
                | Event::Withdrawn {
                    group, role, candidate, ..
                }
                | Event::Granted {
                    group, role, candidate, ..
                }
                | Event::Released {
                    group, role, candidate, ..
                } => names(group, role, candidate),
                Event::NodeChanged { id } => id.len(),
                Event::GroupChanged { name } => name.len(),
            }
    }
}

/// The events a watcher asked for are no longer retained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("revision {requested} is compacted: events are retained from revision {oldest_available} on; re-read the state and watch from its revision")]
pub struct Compacted {
    /// The `after` revision asked for.
    pub requested: u64,
    /// The oldest revision whose events are retained: `events_since(r)`
    /// works for every `r >= oldest_available - 1`.
    pub oldest_available: u64,
}

/// The retained events, oldest first.
///
/// Serialized as `(compacted_through, events)`; the byte count is derived
/// again when decoding, so a snapshot cannot carry one that disagrees with
/// the events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct History {
    /// Every event of a revision ≤ this was evicted (or there was none).
    compacted_through: u64,
    /// `(revision, event)`, revisions non-decreasing, all above
    /// `compacted_through`.
    events: VecDeque<(u64, Event)>,
    /// Sum of `approx_bytes` over `events`.
    bytes: usize,
}

impl History {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    /// Appends the events of revision `revision` (newer than any retained),
    /// then evicts the oldest whole revisions beyond the limits.
    pub(super) fn push(&mut self, revision: u64, events: Vec<Event>) {
        self.push_within(revision, events, limits::MAX_HISTORY_EVENTS, limits::MAX_HISTORY_BYTES);
    }

    /// [`History::push`] with the limits as parameters, for tests.
    pub(super) fn push_within(&mut self, revision: u64, events: Vec<Event>, max_events: usize, max_bytes: usize) {
        debug_assert!(self.events.back().is_none_or(|(r, _)| *r < revision));
        debug_assert!(revision > self.compacted_through);
        for event in events {
            self.bytes = self.bytes.saturating_add(event.approx_bytes());
            self.events.push_back((revision, event));
        }
        // Evict whole revisions: a watcher must never see part of one. If
        // the newest revision alone is over the limits, it goes too, and
        // watchers behind it are told to re-read (the state itself is
        // always complete).
        while self.events.len() > max_events || self.bytes > max_bytes {
            let Some(&(oldest, _)) = self.events.front() else {
                break;
            };
            while let Some((r, event)) = self.events.front() {
                if *r != oldest {
                    break;
                }
                self.bytes = self.bytes.saturating_sub(event.approx_bytes());
                self.events.pop_front();
            }
            self.compacted_through = oldest;
        }
    }

    /// Events with a revision greater than `after`, oldest first, with no gap:
    /// all events of every such revision up to the current one.
    pub(super) fn since(&self, after: u64) -> Result<Vec<(u64, Event)>, Compacted> {
        self.page(after, usize::MAX).map(|(events, _)| events)
    }

    /// Like [`History::since`], but stops after the whole revision in which
    /// the count reaches `max_events` (at least one revision, whatever its
    /// size); the flag says whether later events were left out.
    pub(super) fn page(&self, after: u64, max_events: usize) -> Result<(Vec<(u64, Event)>, bool), Compacted> {
        if after < self.compacted_through {
            return Err(Compacted {
                requested: after,
                oldest_available: self.compacted_through.saturating_add(1),
            });
        }
        let start = self.events.partition_point(|(r, _)| *r <= after);
        let mut out = Vec::new();
        let mut iter = self.events.range(start..).peekable();
        while let Some((r, event)) = iter.next() {
            out.push((*r, event.clone()));
            let revision_done = iter.peek().is_none_or(|(next, _)| next != r);
            if revision_done && out.len() >= max_events {
                return Ok((out, iter.peek().is_some()));
            }
        }
        Ok((out, false))
    }

    /// The oldest revision whose events are retained (see
    /// [`Compacted::oldest_available`]).
    pub(super) fn oldest_available(&self) -> u64 {
        self.compacted_through.saturating_add(1)
    }

    /// Checks what must hold of any history this code produced.
    pub(super) fn check_invariants(&self, revision: u64) -> Result<(), String> {
        if self.compacted_through > revision {
            return Err(format!(
                "history compacted through revision {} beyond the store revision {revision}",
                self.compacted_through
            ));
        }
        let mut previous = self.compacted_through;
        let mut bytes = 0usize;
        for (i, (r, event)) in self.events.iter().enumerate() {
            let out_of_order = if i == 0 { *r <= previous } else { *r < previous };
            if out_of_order || *r > revision {
                return Err(format!(
                    "history event {i} has revision {r} after {previous} (compacted through {}, store revision {revision})",
                    self.compacted_through
                ));
            }
            previous = *r;
            bytes = bytes.saturating_add(event.approx_bytes());
        }
        if bytes != self.bytes {
            return Err(format!(
                "history byte count {} is not the {bytes} of its events",
                self.bytes
            ));
        }
        if self.events.len() > limits::MAX_HISTORY_EVENTS || self.bytes > limits::MAX_HISTORY_BYTES {
            return Err(format!(
                "history holds {} events / {} bytes, over the limits",
                self.events.len(),
                self.bytes
            ));
        }
        Ok(())
    }
}

impl Serialize for History {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.compacted_through, &self.events).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (compacted_through, events) = <(u64, VecDeque<(u64, Event)>)>::deserialize(deserializer)?;
        let bytes = events
            .iter()
            .fold(0usize, |sum, (_, e)| sum.saturating_add(e.approx_bytes()));
        Ok(History {
            compacted_through,
            events,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u64) -> Event {
        Event::NodeChanged { id: format!("n{i}") }
    }

    fn revs(events: &[(u64, Event)]) -> Vec<u64> {
        events.iter().map(|(r, _)| *r).collect()
    }

    fn ok<T>(r: Result<T, Compacted>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn since_returns_whole_later_revisions() {
        let mut h = History::default();
        h.push(1, vec![node(1)]);
        h.push(3, vec![node(2), node(3)]);
        h.push(4, vec![node(4)]);
        assert_eq!(revs(&ok(h.since(0))), vec![1, 3, 3, 4]);
        assert_eq!(revs(&ok(h.since(1))), vec![3, 3, 4]);
        assert_eq!(revs(&ok(h.since(2))), vec![3, 3, 4]);
        assert_eq!(revs(&ok(h.since(4))), Vec::<u64>::new());
        // A future revision is not an error: nothing yet.
        assert_eq!(revs(&ok(h.since(99))), Vec::<u64>::new());
        assert_eq!(h.check_invariants(4), Ok(()));
        assert!(h.check_invariants(3).is_err());
    }

    #[test]
    fn eviction_is_by_whole_revision() {
        let mut h = History::default();
        h.push_within(1, vec![node(1), node(2)], 3, usize::MAX);
        h.push_within(2, vec![node(3)], 3, usize::MAX);
        assert_eq!(h.len(), 3);
        // Four events: revision 1 (two events) goes entirely.
        h.push_within(3, vec![node(4)], 3, usize::MAX);
        assert_eq!(revs(&ok(h.since(1))), vec![2, 3]);
        assert_eq!(
            h.since(0),
            Err(Compacted {
                requested: 0,
                oldest_available: 2
            })
        );
        assert_eq!(h.oldest_available(), 2);
        // A revision larger than the whole budget evicts everything,
        // itself included.
        h.push_within(5, (0..5).map(node).collect(), 3, usize::MAX);
        assert_eq!(h.len(), 0);
        assert!(h.since(4).is_err());
        assert_eq!(revs(&ok(h.since(5))), Vec::<u64>::new());
        h.push_within(6, vec![node(9)], 3, usize::MAX);
        assert_eq!(revs(&ok(h.since(5))), vec![6]);
        assert_eq!(h.check_invariants(6), Ok(()));
    }

    #[test]
    fn eviction_by_bytes() {
        let mut h = History::default();
        let big = |n: usize| {
            Event::Put(KeyValue {
                key: b"k".to_vec(),
                value: vec![0; n],
                ..KeyValue::default()
            })
        };
        let size = big(1000).approx_bytes();
        h.push_within(1, vec![big(1000)], usize::MAX, 2 * size);
        h.push_within(2, vec![big(1000)], usize::MAX, 2 * size);
        assert_eq!(h.len(), 2);
        h.push_within(3, vec![big(1000)], usize::MAX, 2 * size);
        assert_eq!(revs(&ok(h.since(1))), vec![2, 3]);
        assert_eq!(h.bytes, 2 * size);
    }

    #[test]
    fn pages_end_on_revision_boundaries() {
        let mut h = History::default();
        h.push(1, vec![node(1), node(2), node(3)]);
        h.push(2, vec![node(4)]);
        h.push(3, vec![node(5)]);
        let (events, more) = ok(h.page(0, 1));
        assert_eq!((revs(&events), more), (vec![1, 1, 1], true));
        let (events, more) = ok(h.page(1, 1));
        assert_eq!((revs(&events), more), (vec![2], true));
        let (events, more) = ok(h.page(1, 2));
        assert_eq!((revs(&events), more), (vec![2, 3], false));
        let (events, more) = ok(h.page(0, 0));
        assert_eq!((revs(&events), more), (vec![1, 1, 1], true));
    }

    #[test]
    fn serde_rebuilds_the_byte_count() {
        let mut h = History::default();
        h.push(1, vec![node(1), node(22)]);
        h.push_within(2, vec![node(3)], 2, usize::MAX);
        let bytes = match postcard::to_stdvec(&h) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        let back: History = match postcard::from_bytes(&bytes) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(back, h);
        assert_eq!(back.check_invariants(2), Ok(()));
    }
}
