//! Client sessions: retried writes apply once (DESIGN safety rule 9).
//!
//! A client tags each write with a [`RequestId`]: its own random `client_id`
//! and a `sequence` that grows by one per distinct write, reused by retries.
//! For each client the state machine remembers the responses of its last
//! [`limits::SESSION_WINDOW`] sequences. A retry of a remembered sequence
//! gets the remembered response and changes nothing.
//!
//! Sequences may arrive out of order (a client can have several writes in
//! flight, and the leader may order them differently than they were sent);
//! anything inside the window works. A sequence below the window once the
//! window is full may be a write that was applied and whose answer was
//! evicted, so it is refused with [`Rejection::StaleRetry`] rather than
//! applied a second time. Until the window first fills nothing has been
//! evicted, so a low sequence is then genuinely new and applies.
//!
//! At most [`limits::MAX_SESSIONS`] sessions are kept; beyond that the one
//! used least recently, by the log index of its last command, is forgotten.
//! The log index is the same on every replica, so eviction is too. A client
//! whose session was forgotten and that then retries an old write will see it
//! applied again: the cap trades that risk, for clients idle through
//! `MAX_SESSIONS` other clients' writes, against unbounded memory.
//!
//! Deduplication is by `RequestId` alone: a retry is assumed to carry the
//! same operation, and gets the first answer even if it does not.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::command::{Rejection, RequestId, Response};
use crate::limits;

/// One client's remembered answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// Log index of the newest command that used this session.
    last_used: u64,
    /// Sequence → the response it got; at most `SESSION_WINDOW` entries.
    responses: BTreeMap<u64, Response>,
}

/// Every remembered session, plus an index of them by last use.
///
/// Only `by_client` is serialized; `by_last_use` is rebuilt when decoding,
/// so a snapshot cannot carry an index that disagrees with the sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Sessions {
    by_client: BTreeMap<u64, Session>,
    /// `(last_used, client_id)` of every session: the first element is the
    /// session to evict (ties, which real log indices never produce, go to
    /// the lower client id). Makes eviction O(log n).
    by_last_use: BTreeSet<(u64, u64)>,
}

/// What to do with a command that carries a request id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// A retry of a remembered write: answer this, apply nothing.
    Replay(Response),
    /// A write that may already have applied but is no longer remembered.
    Refuse(Rejection),
    /// Not seen before: apply it, then [`Sessions::record`] the response.
    Fresh,
}

impl Sessions {
    pub(super) fn len(&self) -> usize {
        self.by_client.len()
    }

    /// Decides whether a command with `id`, at `log_index`, is applied. Any
    /// use of an existing session, even a replay or a refusal, marks it as
    /// used at `log_index`.
    pub(super) fn admit(&mut self, log_index: u64, id: RequestId) -> Admission {
        let Some(session) = self.by_client.get_mut(&id.client_id) else {
            return Admission::Fresh;
        };
        touch(&mut self.by_last_use, session, id.client_id, log_index);
        if let Some(response) = session.responses.get(&id.sequence) {
            return Admission::Replay(response.clone());
        }
        if session.responses.len() >= limits::SESSION_WINDOW {
            if let Some((&oldest_kept, _)) = session.responses.first_key_value() {
                if id.sequence < oldest_kept {
                    return Admission::Refuse(Rejection::StaleRetry {
                        client_id: id.client_id,
                        sequence: id.sequence,
                        oldest_kept,
                    });
                }
            }
        }
        Admission::Fresh
    }

    /// Remembers the response to a [`Admission::Fresh`] command, creating
    /// the session (and evicting the least recently used one if at the cap)
    /// and dropping the lowest sequence beyond the window.
    pub(super) fn record(&mut self, log_index: u64, id: RequestId, response: Response) {
        if !self.by_client.contains_key(&id.client_id) {
            while self.by_client.len() >= limits::MAX_SESSIONS {
                let Some((_, lru_client)) = self.by_last_use.pop_first() else {
                    break;
                };
                self.by_client.remove(&lru_client);
            }
            self.by_client.insert(
                id.client_id,
                Session {
                    last_used: log_index,
                    responses: BTreeMap::new(),
                },
            );
            self.by_last_use.insert((log_index, id.client_id));
        }
        let Some(session) = self.by_client.get_mut(&id.client_id) else {
            // Inserted just above; nothing to remember into otherwise.
            return;
        };
        touch(&mut self.by_last_use, session, id.client_id, log_index);
        session.responses.insert(id.sequence, response);
        while session.responses.len() > limits::SESSION_WINDOW {
            session.responses.pop_first();
        }
        debug_assert_eq!(self.by_client.len(), self.by_last_use.len());
        debug_assert!(self.by_client.len() <= limits::MAX_SESSIONS);
    }

    /// Checks what must hold of any `Sessions` this code produced.
    pub(super) fn check_invariants(&self) -> Result<(), String> {
        if self.by_client.len() > limits::MAX_SESSIONS {
            return Err(format!(
                "{} client sessions; the limit is {}",
                self.by_client.len(),
                limits::MAX_SESSIONS
            ));
        }
        if self.by_last_use.len() != self.by_client.len() {
            return Err("session last-use index is out of step".into());
        }
        for (client_id, session) in &self.by_client {
            let n = session.responses.len();
            if n == 0 || n > limits::SESSION_WINDOW {
                return Err(format!(
                    "client {client_id:#x} remembers {n} responses; expected 1 to {}",
                    limits::SESSION_WINDOW
                ));
            }
            if !self.by_last_use.contains(&(session.last_used, *client_id)) {
                return Err(format!("client {client_id:#x} missing from the last-use index"));
            }
        }
        Ok(())
    }
}

/// Marks `session` (of `client_id`) as used at `log_index`, keeping the
/// last-use index in step.
fn touch(by_last_use: &mut BTreeSet<(u64, u64)>, session: &mut Session, client_id: u64, log_index: u64) {
    if session.last_used != log_index {
        by_last_use.remove(&(session.last_used, client_id));
        session.last_used = log_index;
        by_last_use.insert((log_index, client_id));
    }
}

impl Serialize for Sessions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.by_client.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Sessions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let by_client = BTreeMap::<u64, Session>::deserialize(deserializer)?;
        let by_last_use = by_client
            .iter()
            .map(|(client_id, session)| (session.last_used, *client_id))
            .collect();
        Ok(Sessions { by_client, by_last_use })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::PutResult;

    fn id(client_id: u64, sequence: u64) -> RequestId {
        RequestId { client_id, sequence }
    }

    /// A recognisable response for sequence `n`.
    fn answer(n: u64) -> Response {
        Response::Put(PutResult {
            revision: n,
            prev_kv: None,
        })
    }

    /// Admits and, if fresh, records `answer(seq)`; returns the admission.
    fn submit(s: &mut Sessions, index: u64, rid: RequestId) -> Admission {
        let a = submit_unchecked(s, index, rid);
        assert_eq!(s.check_invariants(), Ok(()));
        a
    }

    /// [`submit`] without the O(sessions) invariant check, for bulk setup.
    fn submit_unchecked(s: &mut Sessions, index: u64, rid: RequestId) -> Admission {
        let a = s.admit(index, rid);
        if a == Admission::Fresh {
            s.record(index, rid, answer(rid.sequence));
        }
        a
    }

    #[test]
    fn fresh_then_replay() {
        let mut s = Sessions::default();
        assert_eq!(submit(&mut s, 1, id(7, 1)), Admission::Fresh);
        assert_eq!(s.admit(2, id(7, 1)), Admission::Replay(answer(1)));
        // The replay counted as a use.
        assert_eq!(s.by_client[&7].last_used, 2);
        // Another client's same sequence is its own write.
        assert_eq!(submit(&mut s, 3, id(8, 1)), Admission::Fresh);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn out_of_order_within_window() {
        let mut s = Sessions::default();
        for (i, seq) in [5u64, 3, 4, 1, 2, 10].into_iter().enumerate() {
            assert_eq!(submit(&mut s, i as u64 + 1, id(1, seq)), Admission::Fresh, "seq {seq}");
        }
        for seq in [1u64, 2, 3, 4, 5, 10] {
            assert_eq!(s.admit(100, id(1, seq)), Admission::Replay(answer(seq)));
        }
        // Gaps inside the window are still new writes.
        assert_eq!(submit(&mut s, 101, id(1, 7)), Admission::Fresh);
    }

    #[test]
    fn window_evicts_lowest_and_refuses_older() {
        let w = limits::SESSION_WINDOW as u64;
        let mut s = Sessions::default();
        // Sequences 10..10+w fill the window exactly.
        for seq in 10..10 + w {
            assert_eq!(submit(&mut s, seq, id(1, seq)), Admission::Fresh);
        }
        // Window full, nothing evicted yet: all replay.
        assert_eq!(s.admit(500, id(1, 10)), Admission::Replay(answer(10)));
        // Below the full window: could be an evicted write, refused.
        assert_eq!(
            s.admit(501, id(1, 9)),
            Admission::Refuse(Rejection::StaleRetry {
                client_id: 1,
                sequence: 9,
                oldest_kept: 10
            })
        );
        // A new write evicts the lowest sequence.
        assert_eq!(submit(&mut s, 502, id(1, 10 + w)), Admission::Fresh);
        assert_eq!(
            s.admit(503, id(1, 10)),
            Admission::Refuse(Rejection::StaleRetry {
                client_id: 1,
                sequence: 10,
                oldest_kept: 11
            })
        );
        assert_eq!(s.admit(504, id(1, 11)), Admission::Replay(answer(11)));
        // A skipped sequence above the window's low end is still fresh, and
        // it evicts the (new) lowest.
        assert_eq!(submit(&mut s, 505, id(1, 10 + w + 5)), Admission::Fresh);
        assert_eq!(submit(&mut s, 506, id(1, 10 + w + 2)), Admission::Fresh);
        assert!(matches!(s.admit(507, id(1, 12)), Admission::Refuse(_)));
        assert_eq!(s.by_client[&1].responses.len(), limits::SESSION_WINDOW);
    }

    #[test]
    fn below_window_before_it_fills_is_fresh() {
        let mut s = Sessions::default();
        assert_eq!(submit(&mut s, 1, id(1, 100)), Admission::Fresh);
        // Nothing was ever evicted, so sequence 50 cannot be a lost answer.
        assert_eq!(submit(&mut s, 2, id(1, 50)), Admission::Fresh);
        assert_eq!(s.admit(3, id(1, 50)), Admission::Replay(answer(50)));
    }

    #[test]
    fn least_recently_used_session_is_evicted() {
        let mut s = Sessions::default();
        let n = limits::MAX_SESSIONS as u64;
        // Clients 0..n, client c last used at log index c + 1.
        for c in 0..n {
            submit_unchecked(&mut s, c + 1, id(c, 1));
        }
        assert_eq!(s.len(), limits::MAX_SESSIONS);
        // Client 0 is used again (a replay), so client 1 is now the oldest.
        assert_eq!(s.admit(n + 1, id(0, 1)), Admission::Replay(answer(1)));
        submit(&mut s, n + 2, id(n, 1));
        assert_eq!(s.len(), limits::MAX_SESSIONS);
        assert!(s.by_client.contains_key(&0));
        assert!(!s.by_client.contains_key(&1));
        // Client 1 is forgotten: its old sequence looks new again.
        assert_eq!(s.admit(n + 3, id(1, 1)), Admission::Fresh);
        // A write on an existing session evicts nobody.
        submit(&mut s, n + 4, id(2, 2));
        assert_eq!(s.len(), limits::MAX_SESSIONS);
        assert!(s.by_client.contains_key(&3));
        // Next victim is client 3 (client 2 was just used).
        submit(&mut s, n + 5, id(n + 1, 1));
        assert!(s.by_client.contains_key(&2));
        assert!(!s.by_client.contains_key(&3));
    }

    #[test]
    fn eviction_ties_go_to_lower_client_id() {
        let mut s = Sessions::default();
        for c in 0..limits::MAX_SESSIONS as u64 {
            // Reverse id order, all at one log index.
            submit_unchecked(&mut s, 1, id(1_000_000 - c, 1));
        }
        submit(&mut s, 2, id(5, 1));
        let lowest = 1_000_000 - (limits::MAX_SESSIONS as u64 - 1);
        assert!(!s.by_client.contains_key(&lowest));
        assert!(s.by_client.contains_key(&(lowest + 1)));
    }

    #[test]
    fn serde_rebuilds_the_index() {
        let mut s = Sessions::default();
        for (i, c) in [3u64, 1, 2, 3].into_iter().enumerate() {
            submit(&mut s, i as u64 + 10, id(c, i as u64));
        }
        let bytes = match postcard::to_stdvec(&s) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        let back: Sessions = match postcard::from_bytes(&bytes) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(back, s);
        assert_eq!(back.check_invariants(), Ok(()));
    }

    #[test]
    fn invariants_catch_bad_sessions() {
        let mut s = Sessions::default();
        submit(&mut s, 1, id(1, 1));
        let mut bad = s.clone();
        if let Some(session) = bad.by_client.get_mut(&1) {
            session.responses.clear();
        }
        assert!(bad.check_invariants().is_err());
        let mut bad = s.clone();
        if let Some(session) = bad.by_client.get_mut(&1) {
            for seq in 0..=limits::SESSION_WINDOW as u64 {
                session.responses.insert(seq + 10, answer(seq));
            }
        }
        assert!(bad.check_invariants().is_err());
        let mut bad = s;
        bad.by_last_use.clear();
        assert!(bad.check_invariants().is_err());
    }
}
