//! Checks against the replicated event history: the authoritative record of
//! every revision, read from a node's state after the run.
//!
//! * `acked-writes-durable`: every acknowledged put is in the history, at
//!   the revision it was acknowledged with, with its value.
//! * `writes-applied-once`: a logical write (a unique value; the client
//!   retries it under one request id) appears at most once.
//! * `fencing`: grant tokens of the role strictly increase, and every
//!   fenced write that was applied carries the token of a current holder at
//!   its revision (a stale holder's late write never lands).
//! * `watch-no-gaps`: what a watcher received equals the history over the
//!   same revisions: no event missing, duplicated, reordered or invented.

use std::collections::{BTreeMap, BTreeSet};

use roster_proto::v1 as pb;
use roster_server::state::Event;

use crate::workload::{FencedWrite, KvKind, KvOp, FENCED_KEY, GROUP, ROLE};

/// One event, reduced to what both the state and a watcher can show.
pub fn fingerprint(revision: u64, event: &Event) -> String {
    match event {
        Event::Put(kv) => format!("{revision} put {} {}", hex(&kv.key), hex(&kv.value)),
        Event::Delete(kv) => format!("{revision} delete {}", hex(&kv.key)),
        Event::LeaseGranted { id, .. } => format!("{revision} lease-granted {id:x}"),
        Event::LeaseEnded { id, .. } => format!("{revision} lease-ended {id:x}"),
        Event::Campaigned { group, role, candidate } => format!("{revision} campaigned {group}/{role}/{candidate}"),
        Event::Withdrawn {
            group, role, candidate, ..
        } => format!("{revision} withdrawn {group}/{role}/{candidate}"),
        Event::Granted {
            group,
            role,
            candidate,
            token,
            ..
        } => format!("{revision} granted {group}/{role}/{candidate}/{token}"),
        Event::Released {
            group,
            role,
            candidate,
            token,
            ..
        } => format!("{revision} released {group}/{role}/{candidate}/{token}"),
        Event::NodeChanged { id } => format!("{revision} node {id}"),
        Event::GroupChanged { name } => format!("{revision} group {name}"),
    }
}

/// The same reduction of an event as a watcher receives it.
pub fn fingerprint_pb(e: &pb::Event) -> String {
    use pb::event::Event as E;
    let revision = e.revision;
    match &e.event {
        Some(E::Put(kv)) => format!("{revision} put {} {}", hex(&kv.key), hex(&kv.value)),
        Some(E::Delete(kv)) => format!("{revision} delete {}", hex(&kv.key)),
        Some(E::LeaseGranted(l)) => format!("{revision} lease-granted {:x}", l.id),
        Some(E::LeaseEnded(id)) => format!("{revision} lease-ended {id:x}"),
        Some(E::Campaigned(r)) => format!("{revision} campaigned {}/{}/{}", r.group, r.role, r.candidate),
        Some(E::Withdrawn(r)) => format!("{revision} withdrawn {}/{}/{}", r.group, r.role, r.candidate),
        Some(E::Granted(r)) => format!("{revision} granted {}/{}/{}/{}", r.group, r.role, r.candidate, r.token),
        Some(E::Released(r)) => format!("{revision} released {}/{}/{}/{}", r.group, r.role, r.candidate, r.token),
        Some(E::NodeChanged(id)) => format!("{revision} node {id}"),
        Some(E::GroupChanged(name)) => format!("{revision} group {name}"),
        None => format!("{revision} <empty>"),
    }
}

fn hex(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap_or_else(|_| b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A violated rule and what shows it.
pub type Finding = (&'static str, String);

/// The history from `oldest` on (older revisions were compacted away).
pub struct History<'a> {
    pub events: &'a [(u64, Event)],
    /// Revisions below this are not in `events` (compacted).
    pub oldest: u64,
}

/// `acked-writes-durable` and `writes-applied-once` over the kv workload.
pub fn check_writes(h: &History<'_>, kv: &[KvOp], fenced: &[FencedWrite]) -> Vec<Finding> {
    let mut out = Vec::new();
    // value → revisions where it was put.
    let mut puts: BTreeMap<(&[u8], &[u8]), Vec<u64>> = BTreeMap::new();
    for (rev, e) in h.events {
        if let Event::Put(p) = e {
            puts.entry((&p.key, &p.value)).or_default().push(*rev);
        }
    }
    for ((key, value), revs) in &puts {
        // Values written by the workload are unique per logical write.
        if revs.len() > 1 && (key.starts_with(b"k") || *key == FENCED_KEY) {
            out.push((
                "writes-applied-once",
                format!(
                    "{}={} applied at revisions {revs:?}: a retried write was applied twice",
                    hex(key),
                    hex(value)
                ),
            ));
        }
    }
    let acked = kv.iter().filter_map(|op| match &op.kind {
        KvKind::Put {
            value,
            revision: Some(r),
        } => Some((op.key.as_slice(), value.as_slice(), *r)),
        _ => None,
    });
    let acked_fenced = fenced.iter().map(|f| (FENCED_KEY, f.value.as_slice(), f.revision));
    for (key, value, rev) in acked.chain(acked_fenced) {
        if rev < h.oldest {
            continue;
        }
        let found = puts.get(&(key, value)).is_some_and(|revs| revs.contains(&rev));
        if !found {
            out.push((
                "acked-writes-durable",
                format!(
                    "{}={} was acknowledged at revision {rev} but the history has no such put",
                    hex(key),
                    hex(value)
                ),
            ));
        }
    }
    out
}

/// `fencing`: tokens strictly increase; applied fenced writes carry a
/// current holder's token.
pub fn check_fencing(h: &History<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut last_token = 0u64;
    let mut holders: BTreeSet<u64> = BTreeSet::new();
    // Grants older than the history's start are unknown: judge fenced
    // writes only once a grant has been seen.
    let mut known = false;
    for (rev, e) in h.events {
        match e {
            Event::Granted { group, role, token, .. } if group == GROUP && role == ROLE => {
                if *token <= last_token {
                    out.push((
                        "fencing",
                        format!("revision {rev}: token {token} granted after token {last_token}"),
                    ));
                }
                last_token = last_token.max(*token);
                holders.insert(*token);
                known = true;
            }
            Event::Released { group, role, token, .. } if group == GROUP && role == ROLE => {
                holders.remove(token);
            }
            Event::Put(kv) if kv.key == FENCED_KEY && known => {
                let token = token_of(&kv.value);
                if !token.is_some_and(|t| holders.contains(&t)) {
                    out.push((
                        "fencing",
                        format!(
                            "revision {rev}: fenced write {} applied with token {token:?}, but the holders then were {holders:?}",
                            hex(&kv.value)
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// The token a fenced value `c<id>-t<token>-<seq>` was written with.
fn token_of(value: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(value).ok()?;
    s.split('-').find_map(|part| part.strip_prefix('t')?.parse().ok())
}

/// `watch-no-gaps`: `seen` (fingerprints a watcher received, starting after
/// `start`) must equal the history over the same revisions.
pub fn check_watch(h: &History<'_>, start: u64, seen: &[String]) -> Vec<Finding> {
    if start + 1 < h.oldest {
        return Vec::new();
    }
    let Some(last_seen) = seen.last().and_then(|f| f.split(' ').next()?.parse::<u64>().ok()) else {
        return Vec::new();
    };
    let expected: Vec<String> = h
        .events
        .iter()
        .filter(|(rev, _)| *rev > start && *rev <= last_seen)
        .map(|(rev, e)| fingerprint(*rev, e))
        .collect();
    if expected == seen {
        return Vec::new();
    }
    let at = expected
        .iter()
        .zip(seen)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(seen.len()));
    vec![(
        "watch-no-gaps",
        format!(
            "watcher diverges from the history at event {at}: expected {:?}, received {:?} ({} expected, {} received)",
            expected.get(at),
            seen.get(at),
            expected.len(),
            seen.len()
        ),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_server::state::KeyValue;

    fn put(key: &[u8], value: &[u8]) -> Event {
        Event::Put(KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        })
    }

    fn granted(token: u64) -> Event {
        Event::Granted {
            group: GROUP.into(),
            role: ROLE.into(),
            candidate: "c1".into(),
            lease: 1,
            token,
        }
    }

    fn released(token: u64) -> Event {
        Event::Released {
            group: GROUP.into(),
            role: ROLE.into(),
            candidate: "c1".into(),
            token,
            reason: roster_server::state::ReleaseReason::Resigned,
        }
    }

    #[test]
    fn stale_fenced_write_is_found() {
        let events = vec![
            (1, granted(3)),
            (2, put(FENCED_KEY, b"c1-t3-1")),
            (3, released(3)),
            (4, granted(4)),
            (5, put(FENCED_KEY, b"c1-t3-2")),
        ];
        let h = History {
            events: &events,
            oldest: 1,
        };
        let found = check_fencing(&h);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].1.contains("revision 5"));
    }

    #[test]
    fn tokens_must_increase() {
        let events = vec![(1, granted(5)), (2, released(5)), (3, granted(5))];
        let h = History {
            events: &events,
            oldest: 1,
        };
        assert_eq!(check_fencing(&h).len(), 1);
    }

    #[test]
    fn duplicate_and_missing_writes_are_found() {
        let events = vec![(1, put(b"k1", b"c1-1")), (2, put(b"k1", b"c1-1"))];
        let h = History {
            events: &events,
            oldest: 1,
        };
        let kv = vec![KvOp {
            client: 1,
            invoke_us: 0,
            complete_us: Some(1),
            key: b"k2".to_vec(),
            kind: KvKind::Put {
                value: b"c1-2".to_vec(),
                revision: Some(3),
            },
            refused: false,
        }];
        let found = check_writes(&h, &kv, &[]);
        let rules: Vec<_> = found.iter().map(|f| f.0).collect();
        assert_eq!(rules, vec!["writes-applied-once", "acked-writes-durable"], "{found:?}");
    }

    #[test]
    fn watch_gap_is_found() {
        let events = vec![(1, put(b"k1", b"a")), (2, put(b"k1", b"b")), (3, put(b"k1", b"c"))];
        let h = History {
            events: &events,
            oldest: 1,
        };
        let all: Vec<String> = events.iter().map(|(r, e)| fingerprint(*r, e)).collect();
        assert!(check_watch(&h, 0, &all).is_empty());
        let gap = vec![all[0].clone(), all[2].clone()];
        assert_eq!(check_watch(&h, 0, &gap).len(), 1);
    }
}
