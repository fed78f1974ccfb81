//! Linearizability checking of per-key histories of an etcd-v3-like key-value store.
//!
//! # What is checked
//!
//! A *history* is the list of operations that clients issued against the store during a simulated run, each with the
//! simulated time it was invoked and (if an answer arrived) the time it completed, plus what the answer said. The
//! history is *linearizable* if every operation can be given a single instant between its invocation and its
//! completion such that executing the operations one at a time, in the order of those instants, against the
//! sequential specification below, produces exactly the answers the clients saw. Operations whose outcome is unknown
//! (no answer: timeout, crash, partition) may take effect at any instant after their invocation, or not at all.
//!
//! # The sequential specification (per key)
//!
//! Every successful write gets a cluster-wide revision, strictly increasing in commit order. The state of one key is
//! "absent" or "present with (value, mod_revision)". Besides that, the model remembers a *revision floor*: the
//! smallest value the store's global revision counter can have at this point of the linearization, given everything
//! linearized so far. Then:
//!
//! * `Put(v)` acknowledged with revision `r`: legal iff `r > floor`; the state becomes `(v, r)` and `floor = r`.
//! * `Put(v)` with unknown revision: the put consumed *some* revision greater than the floor, so the state becomes
//!   `(v, ?)` and `floor += 1` (the least revision it can have). Taking the least possible revision is not a guess:
//!   every constraint in this model is a lower bound on later revisions, so a smaller floor can only ever allow more
//!   continuations (it *dominates* the larger ones), and a later read that reports the actual revision pins it then.
//! * `Get` observing `(v, r)` against state `(v, ?)`: the read tells us the unknown revision. It is legal iff
//!   `r >= floor` (the put's revision is at least its least possible value; nothing can have consumed a revision
//!   between that put and this read while the state stayed `(v, ?)`, since every write replaces the state). The state
//!   becomes `(v, r)` and `floor = r`. Against a known state the read must match value and revision exactly; a read
//!   observing "absent" needs the key absent.
//! * `Delete` of a present key removes it and consumes a revision (`r > floor`, or `floor += 1` if unknown). A delete
//!   of an absent key is a no-op that reports the *current* revision, which cannot be smaller than the floor but may
//!   equal it (`r >= floor`); with an unknown revision it changes nothing. `deleted == Some(1)` requires the key to be
//!   present, `Some(0)` absent, `None` allows either.
//!
//! Revisions are integers, so the floor arithmetic is exact: after a known revision 5, two unknown-revision writes
//! need revisions 6 and 7 at the least, so a following write acknowledged with revision 7 is impossible.
//!
//! # Why checking key by key is sound
//!
//! Linearizability is *local* (Herlihy & Wing, 1990): a history over several objects is linearizable iff each
//! object's sub-history is. Every operation here touches exactly one key, so each key is an object and [`check`]
//! partitions the history by key. Strictly, the keys share one thing, the global revision counter; the per-key model
//! above abstracts writes to other keys as gaps in the revision sequence (it only requires revisions to increase, never
//! to be consecutive). Restricting a valid global linearization to one key always gives a valid per-key
//! linearization, so every violation reported here is real. What the per-key check cannot see are contradictions
//! that only show up across keys (e.g. key A written at revision 10 strictly before key B is written at revision 5);
//! see the limitations below.
//!
//! # The algorithm (Wing & Gong, with Lowe's memoization)
//!
//! The search builds a linearization one operation at a time, depth first:
//!
//! 1. Every acknowledged operation contributes a *call* event (at `invoke`) and a *return* event (at `complete`) to a
//!    doubly linked list sorted by time. At equal times calls come before returns, so an operation invoked at `t`
//!    and one completing at `t` count as concurrent: that never rejects a history that some tie-breaking would
//!    accept (the conservative choice; the simulator's clock has finite resolution).
//! 2. The candidates for "next in the linearization" are exactly the calls that appear in the list before the first
//!    return event: an operation that returned before another was invoked must be linearized before it. Walking the
//!    list from its head, each candidate is applied to the model; if the model accepts it, the pair (set of
//!    linearized operations, resulting model state) is looked up in a cache and, if new, the call and its return are
//!    unlinked from the list (O(1), "dancing links"), the choice is pushed on a stack and the walk restarts at the
//!    head.
//! 3. Reaching a return event means the operation owning it was never linearized before it returned: dead end.
//!    The last choice is popped, its events are linked back in, and the walk continues after it.
//! 4. The history is linearizable once every acknowledged operation is linearized; it is not once the stack is empty
//!    at a dead end.
//!
//! The cache is what makes this practical (Lowe): two different orders that linearize the same set of operations and
//! reach the same model state have identical futures, so the second one is pruned.
//!
//! Revisions give a second, cheap pruning rule. The floor never decreases along a linearization, and every
//! acknowledged op that carries a revision bounds the floor it can still be linearized at (a put or a removing delete
//! with revision `r` needs floor `< r`; a read of `(v, r)` or a possibly no-op delete needs floor `<= r`). A step that
//! raises the floor above the smallest bound among the acknowledged ops still to be linearized is therefore a dead
//! end right away, instead of only when that op's return event is reached. This is what keeps highly concurrent
//! histories cheap: wrongly ordered writes are rejected immediately.
//!
//! Operations with unknown outcome have no return event: they never force anything to happen before them, and the
//! search may use them or leave them out (they are only needed to explain what someone observed). They are kept in
//! a separate list ordered by invocation and tried *after* the acknowledged candidates, so the search first looks for
//! a linearization that does without them. Left alone they would blow the search up (each one is a candidate at
//! every later point, in every combination), so four refinements restrict them. All rest on one *removal* argument:
//! deleting an unknown-outcome write `w` from a valid linearization leaves it valid unless the op right after `w`
//! *consumes* `w`'s effect, i.e. is a read of `w`'s value or a delete reporting `deleted == 1` (for a put), or a read of
//! "absent" or a delete reporting `deleted == 0` (for a delete). Any other successor either overwrites the state
//! anyway (puts, deletes with `deleted == None`) or would have failed; and without `w` the floor is only lower, which
//! never hurts.
//!
//! * Normal form: the search only considers linearizations in which every unknown-outcome write is immediately
//!   followed by an op consuming it (repeatedly removing the others turns any valid linearization into one of this
//!   form). After linearizing such a write, only consumers are tried next.
//! * Consequently an unknown-outcome put whose value no read observed, when no delete reported `deleted == 1`, can
//!   never be used and is dropped up front (likewise an unknown-outcome delete when no read observed "absent" and no
//!   delete reported `deleted == 0`; an unknown-outcome read says nothing at all and is always dropped).
//! * Applying an unknown-outcome op that leaves the model state unchanged is skipped: it is the same as leaving it out.
//! * The cache uses dominance instead of equality: a node (acknowledged set `D`, unknown-outcome set `U`, state `s`) is
//!   pruned when a node `(D, U', s')` with `U' ⊆ U`, the same value, `s'.floor <= s.floor` and no more restricted
//!   (i.e. not "must be followed by a consumer" unless this one is too) was already visited, because every
//!   continuation of the former is also a continuation of the latter. Visited nodes are failed or still on the
//!   stack, and a successful node dominated by a visited one makes that one successful with a shorter remaining
//!   distance, so a search that ends without success has really exhausted the space.
//!
//! A step budget ([`DEFAULT_STEP_BUDGET`] model applications per key) bounds the work on pathological histories; if
//! it runs out the verdict is [`Verdict::Unknown`], which callers must report, never treat as a pass.
//!
//! # Limitations
//!
//! * Cross-key revision consistency is not checked (see above).
//! * The search is exponential in the worst case (linearizability checking is NP-complete). Revisions pin the order
//!   of acknowledged writes and of reads that saw a value, so what remains expensive is many long-overlapping ops
//!   that carry no revision (reads of "absent", writes with unreported revisions) or many unknown-outcome writes
//!   that were observed; such histories can exhaust the budget and yield [`Verdict::Unknown`].
//! * On a violation, the "longest prefix" is the longest one this search found; other prefixes of the same length
//!   may exist, and the blocked operations are those that could come next after that particular prefix.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

/// Default number of model applications ("state expansions") the search may do for one key before giving up.
pub const DEFAULT_STEP_BUDGET: u64 = 2_000_000;

/// One client operation on one key, as recorded by the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Index in the caller's history; only used in reports.
    pub id: usize,
    /// The issuing client; only used in reports.
    pub client: u64,
    /// Simulated time (µs) the call started.
    pub invoke: u64,
    /// Time the answer arrived; `None` = no answer, so the operation may or may not have taken effect, at any time
    /// after `invoke`.
    pub complete: Option<u64>,
    /// The key this operation touched.
    pub key: Vec<u8>,
    /// What was asked and what was answered.
    pub kind: OpKind,
}

/// The operation and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Put of `value`. `revision`: `Some(r)` when acknowledged with revision `r`; `None` when the outcome is unknown.
    Put { value: Vec<u8>, revision: Option<u64> },
    /// Delete. `revision`: `Some(r)` when acknowledged (the delete's revision, or the current revision if nothing
    /// was deleted); `deleted`: number of keys removed (0 or 1) when known.
    Delete {
        revision: Option<u64>,
        deleted: Option<u64>,
    },
    /// Linearizable read; `observed`: `None` = key absent, `Some((value, mod_revision))` otherwise.
    Get { observed: Option<(Vec<u8>, u64)> },
}

/// Outcome of checking one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Ok,
    /// No linearization exists; the explanation shows how far the search got.
    Violation(Explanation),
    /// The step budget ran out before the search could decide. Must be reported, never treated as a pass.
    Unknown { steps: u64 },
}

/// The model state of a key at some point of a linearization, in caller-facing form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelState {
    /// `None` = absent; `Some((value, revision))`, where `revision` is `None` when the value was written by a put
    /// whose revision is not known (yet).
    pub value: Option<(Vec<u8>, Option<u64>)>,
    /// Least possible value of the store's revision counter at this point.
    pub revision_floor: u64,
}

/// One step of the longest linearizable prefix found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixStep {
    /// Caller's op id.
    pub op: usize,
    /// Human-readable summary of the op.
    pub op_desc: String,
    /// Model state right after this op.
    pub state_after: ModelState,
}

/// An op that could have come next after the longest prefix, and why it did not work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedOp {
    /// Caller's op id.
    pub op: usize,
    /// Human-readable summary of the op.
    pub op_desc: String,
    /// Why it cannot be linearized next (or why doing so leads nowhere).
    pub reason: String,
}

/// Why a key's history is not linearizable, for a human reading a simulator failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The key.
    pub key: Vec<u8>,
    /// Number of ops of this key that were given to the checker.
    pub ops_total: usize,
    /// Ids of unknown-outcome ops left out up front because nothing could ever observe their effect.
    pub ignored_unknown: Vec<usize>,
    /// Model applications the search performed.
    pub steps: u64,
    /// The longest linearizable prefix the search found, in order, with the state after each op.
    pub prefix: Vec<PrefixStep>,
    /// The not-yet-linearized acknowledged op that completed first: everything after the prefix had to fit before
    /// its completion, `(op id, description, completion time)`.
    pub deadline: Option<(usize, String, u64)>,
    /// The acknowledged ops that could come next after the prefix, each with why it cannot.
    pub blocked: Vec<BlockedOp>,
    /// Ids of unknown-outcome ops that could also have taken effect right after the prefix (none of them helps).
    pub unknown_candidates: Vec<usize>,
}

/// Checks a whole history: partitions it by key (sound because linearizability is local, see the module docs) and
/// checks each key with [`check_key`]. Results are sorted by key, so they are deterministic.
pub fn check(history: &[Op]) -> Vec<(Vec<u8>, Verdict)> {
    check_with_budget(history, DEFAULT_STEP_BUDGET)
}

/// [`check`] with an explicit per-key step budget.
pub fn check_with_budget(history: &[Op], budget: u64) -> Vec<(Vec<u8>, Verdict)> {
    let mut by_key: BTreeMap<&[u8], Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_slice()).or_default().push(op);
    }
    by_key
        .into_iter()
        .map(|(key, ops)| (key.to_vec(), check_refs(&ops, budget)))
        .collect()
}

/// Checks the ops of one key (all ops must be on the same key; [`check`] takes care of that) with the default budget.
pub fn check_key(ops: &[Op]) -> Verdict {
    check_key_with_budget(ops, DEFAULT_STEP_BUDGET)
}

/// [`check_key`] with an explicit step budget (number of model applications).
pub fn check_key_with_budget(ops: &[Op], budget: u64) -> Verdict {
    let refs: Vec<&Op> = ops.iter().collect();
    check_refs(&refs, budget)
}

// ---------------------------------------------------------------------------------------------------------------
// Internal representation
// ---------------------------------------------------------------------------------------------------------------

/// Model state with values interned to small integers, so it is `Copy` and cheap to hash in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    /// `None` = absent; `Some((value id, revision if known))`.
    value: Option<(u32, Option<u64>)>,
    /// Least possible value of the global revision counter here.
    floor: u64,
}

const INITIAL: State = State { value: None, floor: 0 };

#[derive(Clone, Copy, Debug)]
enum IKind {
    Put {
        value: u32,
        revision: Option<u64>,
    },
    Delete {
        revision: Option<u64>,
        deleted: Option<u64>,
    },
    Get {
        observed: Option<(u32, u64)>,
    },
}

#[derive(Clone, Copy, Debug)]
struct IOp {
    /// Index into the caller's slice.
    pos: usize,
    invoke: u64,
    /// Completion time, clamped to be at least `invoke`; `None` = unknown outcome.
    complete: Option<u64>,
    kind: IKind,
}

/// Why the model refused an op (rendered into text only when building an explanation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reject {
    /// A write or no-op delete reported revision `rev` but the revision at this point must be at least `min`.
    RevisionTooLow {
        rev: u64,
        min: u64,
    },
    DeleteExpectedAbsent,
    DeleteExpectedPresent,
    DeletedCountImpossible(u64),
    /// A read's observation differs from the state.
    GetMismatch,
    /// A read observed the value whose revision is unknown, with a revision lower than possible.
    GetRevisionTooLow {
        min: u64,
    },
}

/// The sequential specification: applies `kind` to `s`.
fn step(s: State, kind: IKind) -> Result<State, Reject> {
    match kind {
        IKind::Put { value, revision } => match revision {
            Some(r) if r > s.floor => Ok(State {
                value: Some((value, Some(r))),
                floor: r,
            }),
            Some(r) => Err(Reject::RevisionTooLow {
                rev: r,
                min: s.floor.saturating_add(1),
            }),
            None => Ok(State {
                value: Some((value, None)),
                floor: s.floor.saturating_add(1),
            }),
        },
        IKind::Delete { revision, deleted } => {
            let present = s.value.is_some();
            match deleted {
                Some(0) if present => return Err(Reject::DeleteExpectedAbsent),
                Some(1) if !present => return Err(Reject::DeleteExpectedPresent),
                Some(n) if n > 1 => return Err(Reject::DeletedCountImpossible(n)),
                _ => {}
            }
            // Removing the key consumes a new revision; a no-op delete only reports the current one.
            let min = if present { s.floor.saturating_add(1) } else { s.floor };
            match revision {
                Some(r) if r >= min => Ok(State { value: None, floor: r }),
                Some(r) => Err(Reject::RevisionTooLow { rev: r, min }),
                None => Ok(State {
                    value: None,
                    floor: min,
                }),
            }
        }
        IKind::Get { observed } => match (observed, s.value) {
            (None, None) => Ok(s),
            (Some((v, r)), Some((cv, crev))) if v == cv => match crev {
                Some(cr) if cr == r => Ok(s),
                Some(_) => Err(Reject::GetMismatch),
                // The first read of a value written with unknown revision learns that revision.
                None if r >= s.floor => Ok(State {
                    value: Some((v, Some(r))),
                    floor: r,
                }),
                None => Err(Reject::GetRevisionTooLow { min: s.floor }),
            },
            _ => Err(Reject::GetMismatch),
        },
    }
}

/// A set of small integers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn is_subset_of(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// Node of the event list. Index 0 is the sentinel (list head and tail).
#[derive(Clone, Copy, Debug)]
struct Node {
    /// Index into the internal op list (unused for the sentinel).
    op: usize,
    time: u64,
    is_call: bool,
    /// For a call: the node of its return.
    partner: usize,
    prev: usize,
    next: usize,
}

/// The choice recorded on the backtracking stack.
#[derive(Clone, Copy, Debug)]
enum Choice {
    /// An acknowledged op, identified by its call node.
    Acked(usize),
    /// An unknown-outcome op, identified by its position in the optional list.
    Optional(usize),
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    choice: Choice,
    /// State before applying the choice.
    before: State,
    /// Time of the first return event when the choice was made (bounds which optional ops are candidates).
    deadline: u64,
}

#[derive(Clone, Copy, Debug)]
enum Cursor {
    /// Walking the event list; the node to look at next.
    Acked(usize),
    /// Walking the optional ops; the position to look at next.
    Optional(usize),
}

enum SearchResult {
    Linearizable,
    /// Not linearizable; the longest prefix found, as (internal op index, state after).
    Stuck {
        prefix: Vec<(usize, State)>,
        steps: u64,
    },
    OutOfBudget {
        steps: u64,
    },
}

/// A visited node, minus its acknowledged set (which is the key of the cache).
struct Visited {
    value: Option<(u32, Option<u64>)>,
    floor: u64,
    optional: Bits,
    /// The node was reached by an unknown-outcome write, so only an op consuming its effect may follow.
    restricted: bool,
}

/// Visited-node cache: acknowledged set -> visited nodes with that set, queried with dominance.
type Cache = HashMap<Bits, Vec<Visited>>;

/// Records a node as visited; returns false if an already visited node dominates it: same acknowledged set and
/// value, no larger floor, a subset of the unknown-outcome ops, and no more restricted.
fn remember(cache: &mut Cache, acked: &Bits, optional: &Bits, st: State, restricted: bool) -> bool {
    let node = Visited {
        value: st.value,
        floor: st.floor,
        optional: optional.clone(),
        restricted,
    };
    match cache.get_mut(acked) {
        Some(list) => {
            let dominated = list.iter().any(|e| {
                e.value == st.value
                    && e.floor <= st.floor
                    && (!e.restricted || restricted)
                    && e.optional.is_subset_of(optional)
            });
            if !dominated {
                list.push(node);
            }
            !dominated
        }
        None => {
            cache.insert(acked.clone(), vec![node]);
            true
        }
    }
}

/// Can `next` be the op right after the unknown-outcome write `write`? Only if it needs that write's effect: a read
/// of the put's value or a delete that reported removing the key; a read of "absent" or a delete that reported
/// removing nothing after a delete. Any other successor makes the write removable (see the module docs), so
/// linearizations where it is followed by anything else need not be searched.
fn consumes(write: IKind, next: IKind) -> bool {
    match (write, next) {
        (IKind::Put { value, .. }, IKind::Get { observed: Some((v, _)) }) => v == value,
        (IKind::Put { .. }, IKind::Delete { deleted: Some(1), .. }) => true,
        (IKind::Delete { .. }, IKind::Get { observed: None }) => true,
        (IKind::Delete { .. }, IKind::Delete { deleted: Some(0), .. }) => true,
        _ => false,
    }
}

/// The WGL search over `iops` (described in the module docs).
fn search(iops: &[IOp], budget: u64) -> SearchResult {
    // Bit index of every op within its class, and the optional ops ordered by invocation.
    let mut slot = vec![0usize; iops.len()];
    let mut n_acked = 0;
    let mut optional: Vec<usize> = Vec::new();
    for (i, op) in iops.iter().enumerate() {
        if op.complete.is_some() {
            slot[i] = n_acked;
            n_acked += 1;
        } else {
            slot[i] = optional.len();
            optional.push(i);
        }
    }
    optional.sort_by_key(|&i| (iops[i].invoke, i));

    // The event list: (time, is_return, op) sorts calls before returns at equal times.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n_acked);
    for (i, op) in iops.iter().enumerate() {
        if let Some(c) = op.complete {
            events.push((op.invoke, false, i));
            events.push((c, true, i));
        }
    }
    events.sort_unstable();
    let len = events.len();
    let mut nodes = Vec::with_capacity(len + 1);
    nodes.push(Node {
        op: usize::MAX,
        time: 0,
        is_call: false,
        partner: 0,
        prev: len,
        next: 1 % (len + 1),
    });
    let mut call_node = vec![0usize; iops.len()];
    for (k, &(time, is_return, op)) in events.iter().enumerate() {
        let idx = k + 1;
        if !is_return {
            call_node[op] = idx;
        }
        nodes.push(Node {
            op,
            time,
            is_call: !is_return,
            partner: 0,
            prev: k,
            next: (idx + 1) % (len + 1),
        });
    }
    for idx in 1..=len {
        if !nodes[idx].is_call {
            let c = call_node[nodes[idx].op];
            nodes[c].partner = idx;
        }
    }

    let lift = |nodes: &mut Vec<Node>, c: usize| {
        for n in [c, nodes[c].partner] {
            let Node { prev, next, .. } = nodes[n];
            nodes[prev].next = next;
            nodes[next].prev = prev;
        }
    };
    let unlift = |nodes: &mut Vec<Node>, c: usize| {
        for n in [nodes[c].partner, c] {
            let Node { prev, next, .. } = nodes[n];
            nodes[prev].next = n;
            nodes[next].prev = n;
        }
    };

    let mut acked_bits = Bits::new(n_acked);
    let mut optional_bits = Bits::new(optional.len());
    let mut optional_done = vec![false; optional.len()];
    let mut cache: Cache = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut best: Option<Vec<(usize, State)>> = None;
    let mut state = INITIAL;
    let mut remaining = n_acked;
    let mut steps: u64 = 0;
    // Pending acknowledged ops with a revision, by the highest floor that still allows them (see `floor_bound`).
    let mut pending: BTreeSet<(u64, usize)> = (0..iops.len())
        .filter(|&i| iops[i].complete.is_some())
        .filter_map(|i| floor_bound(iops[i].kind).map(|b| (b, i)))
        .collect();
    let mut deadline = u64::MAX;
    let mut cursor = Cursor::Acked(nodes[0].next);

    loop {
        if remaining == 0 {
            return SearchResult::Linearizable;
        }
        // Pick the next candidate, or find that there is none left at this depth.
        let candidate = match cursor {
            Cursor::Acked(n) if n != 0 && nodes[n].is_call => Some((nodes[n].op, Choice::Acked(n))),
            Cursor::Acked(n) => {
                // First return event (or end of list): acknowledged candidates exhausted; try the optional ones
                // invoked no later than this return.
                deadline = if n == 0 { u64::MAX } else { nodes[n].time };
                cursor = Cursor::Optional(0);
                continue;
            }
            Cursor::Optional(p) if p < optional.len() && iops[optional[p]].invoke <= deadline => {
                Some((optional[p], Choice::Optional(p)))
            }
            Cursor::Optional(_) => None,
        };

        let Some((i, choice)) = candidate else {
            // Dead end: backtrack.
            // Remember the deepest prefix, without a trailing unknown-outcome write (it only makes sense together
            // with the op consuming it).
            let mut depth = stack.len();
            while depth > 0 && matches!(stack[depth - 1].choice, Choice::Optional(_)) {
                depth -= 1;
            }
            if best.as_ref().is_none_or(|b| depth > b.len()) {
                let after = stack.get(depth).map_or(state, |f| f.before);
                best = Some(snapshot(&stack[..depth], after, &nodes, &optional));
            }
            let Some(frame) = stack.pop() else {
                return SearchResult::Stuck {
                    prefix: best.unwrap_or_default(),
                    steps,
                };
            };
            state = frame.before;
            match frame.choice {
                Choice::Acked(c) => {
                    unlift(&mut nodes, c);
                    acked_bits.clear(slot[nodes[c].op]);
                    if let Some(b) = floor_bound(iops[nodes[c].op].kind) {
                        pending.insert((b, nodes[c].op));
                    }
                    remaining += 1;
                    cursor = Cursor::Acked(nodes[c].next);
                }
                Choice::Optional(p) => {
                    optional_bits.clear(slot[optional[p]]);
                    optional_done[p] = false;
                    deadline = frame.deadline;
                    cursor = Cursor::Optional(p + 1);
                }
            }
            continue;
        };

        let advance = |cursor: Cursor| match cursor {
            Cursor::Acked(n) => Cursor::Acked(nodes[n].next),
            Cursor::Optional(p) => Cursor::Optional(p + 1),
        };
        if matches!(choice, Choice::Optional(p) if optional_done[p]) {
            // Already linearized on this path.
            cursor = advance(cursor);
            continue;
        }

        // After an unknown-outcome write, only an op that consumes its effect may come next.
        let unconsumed = match stack.last() {
            Some(Frame {
                choice: Choice::Optional(q),
                ..
            }) => !consumes(iops[optional[*q]].kind, iops[i].kind),
            _ => false,
        };
        if unconsumed {
            cursor = advance(cursor);
            continue;
        }
        steps += 1;
        if steps > budget {
            return SearchResult::OutOfBudget { steps };
        }
        let applied = match step(state, iops[i].kind) {
            // An optional op that changes nothing is the same as leaving it out.
            Ok(next) if matches!(choice, Choice::Optional(_)) && next == state => None,
            Ok(next) => Some(next),
            Err(_) => None,
        };
        let Some(next) = applied else {
            cursor = advance(cursor);
            continue;
        };
        // The floor never decreases, so if it passes the bound of an acknowledged op still to be linearized, that
        // op can never be: dead end now rather than at that op's return event.
        if pending
            .iter()
            .find(|&&(_, j)| j != i)
            .is_some_and(|&(b, _)| next.floor > b)
        {
            cursor = advance(cursor);
            continue;
        }
        match choice {
            Choice::Acked(_) => acked_bits.set(slot[i]),
            Choice::Optional(_) => optional_bits.set(slot[i]),
        }
        let restricted = matches!(choice, Choice::Optional(_));
        if !remember(&mut cache, &acked_bits, &optional_bits, next, restricted) {
            match choice {
                Choice::Acked(_) => acked_bits.clear(slot[i]),
                Choice::Optional(_) => optional_bits.clear(slot[i]),
            }
            cursor = advance(cursor);
            continue;
        }
        stack.push(Frame {
            choice,
            before: state,
            deadline,
        });
        state = next;
        match choice {
            Choice::Acked(c) => {
                lift(&mut nodes, c);
                remaining -= 1;
                if let Some(b) = floor_bound(iops[i].kind) {
                    pending.remove(&(b, i));
                }
            }
            Choice::Optional(p) => optional_done[p] = true,
        }
        cursor = Cursor::Acked(nodes[0].next);
    }
}

/// The highest revision floor at which an op can still be linearized, if its answer carries a revision: a put or a
/// removing delete needs the floor below its revision; a read or a possibly no-op delete allows it to be equal.
fn floor_bound(kind: IKind) -> Option<u64> {
    match kind {
        IKind::Put { revision: Some(r), .. }
        | IKind::Delete {
            revision: Some(r),
            deleted: Some(1),
        } => Some(r.saturating_sub(1)),
        IKind::Delete { revision: Some(r), .. } | IKind::Get { observed: Some((_, r)) } => Some(r),
        _ => None,
    }
}

/// The prefix on `frames` (with `state` the state after the last one) as (internal op index, state after) pairs.
fn snapshot(frames: &[Frame], state: State, nodes: &[Node], optional: &[usize]) -> Vec<(usize, State)> {
    let afters = frames.iter().skip(1).map(|f| f.before).chain(std::iter::once(state));
    frames
        .iter()
        .zip(afters)
        .map(|(f, s)| (frame_op(f, nodes, optional), s))
        .collect()
}

fn frame_op(f: &Frame, nodes: &[Node], optional: &[usize]) -> usize {
    match f.choice {
        Choice::Acked(c) => nodes[c].op,
        Choice::Optional(p) => optional[p],
    }
}

/// Interns values, converts ops, drops useless unknown-outcome ops, searches, and builds the verdict.
fn check_refs(ops: &[&Op], budget: u64) -> Verdict {
    let mut ids: HashMap<&[u8], u32> = HashMap::new();
    let mut values: Vec<&[u8]> = Vec::new();
    for op in ops {
        let v = match &op.kind {
            OpKind::Put { value, .. } => Some(value.as_slice()),
            OpKind::Get {
                observed: Some((value, _)),
            } => Some(value.as_slice()),
            _ => None,
        };
        if let Some(v) = v {
            ids.entry(v).or_insert_with(|| {
                values.push(v);
                (values.len() - 1) as u32
            });
        }
    }
    let id = |v: &[u8]| ids[v];
    let all: Vec<IOp> = ops
        .iter()
        .enumerate()
        .map(|(pos, op)| IOp {
            pos,
            invoke: op.invoke,
            complete: op.complete.map(|c| c.max(op.invoke)),
            kind: match &op.kind {
                OpKind::Put { value, revision } => IKind::Put {
                    value: id(value),
                    revision: *revision,
                },
                OpKind::Delete { revision, deleted } => IKind::Delete {
                    revision: *revision,
                    deleted: *deleted,
                },
                OpKind::Get { observed } => IKind::Get {
                    observed: observed.as_ref().map(|(v, r)| (id(v), *r)),
                },
            },
        })
        .collect();

    // What could make an unknown-outcome op useful (computed over every op that is kept).
    let mut observed_values = HashSet::new();
    let mut absent_observed = false;
    let mut needs_present = false;
    let mut needs_absent = false;
    for op in &all {
        match op.kind {
            IKind::Get { observed: Some((v, _)) } if op.complete.is_some() => {
                observed_values.insert(v);
            }
            IKind::Get { observed: None } if op.complete.is_some() => absent_observed = true,
            IKind::Delete { deleted: Some(1), .. } => needs_present = true,
            IKind::Delete { deleted: Some(0), .. } => needs_absent = true,
            _ => {}
        }
    }
    let useful = |op: &IOp| {
        op.complete.is_some()
            || match op.kind {
                IKind::Put { value, .. } => observed_values.contains(&value) || needs_present,
                IKind::Delete { .. } => absent_observed || needs_absent,
                IKind::Get { .. } => false,
            }
    };
    let (kept, dropped): (Vec<IOp>, Vec<IOp>) = all.iter().partition(|op| useful(op));

    match search(&kept, budget) {
        SearchResult::Linearizable => Verdict::Ok,
        SearchResult::OutOfBudget { steps } => Verdict::Unknown { steps },
        SearchResult::Stuck { prefix, steps } => {
            let ignored = dropped.iter().map(|op| ops[op.pos].id).collect();
            Verdict::Violation(explain(ops, &kept, &values, &prefix, ignored, steps))
        }
    }
}

/// Builds the human-readable explanation for a failed search.
fn explain(
    ops: &[&Op],
    kept: &[IOp],
    values: &[&[u8]],
    prefix: &[(usize, State)],
    ignored_unknown: Vec<usize>,
    steps: u64,
) -> Explanation {
    let orig = |i: usize| ops[kept[i].pos];
    let state = prefix.last().map_or(INITIAL, |&(_, s)| s);
    let mut done = vec![false; kept.len()];
    for &(i, _) in prefix {
        done[i] = true;
    }
    // The acknowledged op that completes first among those not linearized bounds what could come next.
    let first_return = (0..kept.len())
        .filter(|&i| !done[i])
        .filter_map(|i| kept[i].complete.map(|c| (c, i)))
        .min();
    let limit = first_return.map_or(u64::MAX, |(c, _)| c);
    let mut candidates: Vec<usize> = (0..kept.len())
        .filter(|&i| !done[i] && kept[i].invoke <= limit)
        .collect();
    candidates.sort_by_key(|&i| (kept[i].invoke, i));
    // Unknown-outcome ops are listed apart: they can almost always take effect, which is rarely the point.
    let (unknown, acked): (Vec<usize>, Vec<usize>) = candidates.into_iter().partition(|&i| kept[i].complete.is_none());
    let unknown_candidates = unknown.iter().map(|&i| orig(i).id).collect();
    let blocked = acked
        .into_iter()
        .map(|i| {
            // The pending acknowledged op (other than this one) that tolerates the lowest revision floor.
            let tightest = (0..kept.len())
                .filter(|&j| j != i && !done[j] && kept[j].complete.is_some())
                .filter_map(|j| floor_bound(kept[j].kind).map(|b| (b, j)))
                .min();
            let mut reason = match step(state, kept[i].kind) {
                Err(r) => render_reject(r, kept[i].kind, state, values),
                Ok(next) if tightest.is_some_and(|(b, _)| next.floor > b) => {
                    let (_, j) = tightest.unwrap_or_default();
                    format!(
                        "could be applied (state would become {}), but then {} could never be linearized: the store \
                         revision would already be >= {}",
                        export(next, values),
                        describe(orig(j)),
                        next.floor
                    )
                }
                Ok(next) => format!(
                    "could be applied (state would become {}), but no way to linearize the remaining ops after it \
                     was found",
                    export(next, values)
                ),
            };
            // Say what the unknown-outcome writes whose effect this op could consume would have changed.
            for &u in unknown
                .iter()
                .filter(|&&u| consumes(kept[u].kind, kept[i].kind))
                .take(3)
            {
                let Ok(after_u) = step(state, kept[u].kind) else {
                    continue;
                };
                let what = match step(after_u, kept[i].kind) {
                    Err(r) => render_reject(r, kept[i].kind, after_u, values),
                    Ok(_) => "it could then be applied, but no way to linearize the remaining ops was found".into(),
                };
                reason.push_str(&format!("; if {} took effect just before: {what}", describe(orig(u))));
            }
            BlockedOp {
                op: orig(i).id,
                op_desc: describe(orig(i)),
                reason,
            }
        })
        .collect();
    Explanation {
        key: ops.first().map(|o| o.key.clone()).unwrap_or_default(),
        ops_total: ops.len(),
        ignored_unknown,
        steps,
        prefix: prefix
            .iter()
            .map(|&(i, s)| PrefixStep {
                op: orig(i).id,
                op_desc: describe(orig(i)),
                state_after: export(s, values),
            })
            .collect(),
        deadline: first_return.map(|(c, i)| (orig(i).id, describe(orig(i)), c)),
        blocked,
        unknown_candidates,
    }
}

fn export(s: State, values: &[&[u8]]) -> ModelState {
    ModelState {
        value: s.value.map(|(v, r)| (values[v as usize].to_vec(), r)),
        revision_floor: s.floor,
    }
}

fn render_reject(r: Reject, kind: IKind, s: State, values: &[&[u8]]) -> String {
    let st = export(s, values);
    match (r, kind) {
        (Reject::RevisionTooLow { rev, min }, IKind::Put { .. }) => {
            format!("acknowledged with rev {rev}, but a write here needs rev >= {min} (state is {st})")
        }
        (Reject::RevisionTooLow { rev, min }, _) => {
            format!("acknowledged with rev {rev}, but the store revision here is already >= {min} (state is {st})")
        }
        (Reject::DeleteExpectedAbsent, _) => format!("reported deleted=0 but the key is present: {st}"),
        (Reject::DeleteExpectedPresent, _) => format!("reported deleted=1 but the key is {st}"),
        (Reject::DeletedCountImpossible(n), _) => format!("reported deleted={n}, impossible for a single key"),
        (
            Reject::GetRevisionTooLow { min },
            IKind::Get {
                observed: Some((v, rev)),
            },
        ) => format!(
            "observed ({}, rev {rev}) but that put's revision is not known and must be >= {min} (state is {st})",
            fmt_value(values[v as usize])
        ),
        (_, IKind::Get { observed }) => {
            let obs = match observed {
                None => "absent".to_string(),
                Some((v, rev)) => format!("({}, rev {rev})", fmt_value(values[v as usize])),
            };
            format!("observed {obs} but state is {st}")
        }
        (r, _) => format!("{r:?} (state is {st})"),
    }
}

/// Printable ASCII as is, anything else as hex.
fn fmt_value(v: &[u8]) -> String {
    if !v.is_empty() && v.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(v).into_owned()
    } else {
        let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
        format!("0x{hex}")
    }
}

fn fmt_rev(r: Option<u64>) -> String {
    r.map_or_else(|| "?".to_string(), |r| r.to_string())
}

/// One-line summary of an op, e.g. `Get#17 c3 [t=100..250] observed (v5, rev 40)`.
fn describe(op: &Op) -> String {
    let when = match op.complete {
        Some(c) => format!("[t={}..{}]", op.invoke, c),
        None => format!("[t={}..? no answer]", op.invoke),
    };
    let head = |name: &str| format!("{name}#{} c{} {when}", op.id, op.client);
    match &op.kind {
        OpKind::Put { value, revision } => {
            format!("{} {} -> rev {}", head("Put"), fmt_value(value), fmt_rev(*revision))
        }
        OpKind::Delete { revision, deleted } => format!(
            "{} -> rev {}, deleted {}",
            head("Delete"),
            fmt_rev(*revision),
            deleted.map_or_else(|| "?".to_string(), |d| d.to_string())
        ),
        OpKind::Get { observed } => match observed {
            None => format!("{} observed absent", head("Get")),
            Some((v, r)) => format!("{} observed ({}, rev {r})", head("Get"), fmt_value(v)),
        },
    }
}

impl fmt::Display for ModelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            None if self.revision_floor == 0 => write!(f, "absent"),
            None => write!(f, "absent (store rev >= {})", self.revision_floor),
            Some((v, Some(r))) => write!(f, "({}, rev {r})", fmt_value(v)),
            Some((v, None)) => write!(f, "({}, rev unknown >= {})", fmt_value(v), self.revision_floor),
        }
    }
}

impl Explanation {
    /// Model state after the longest prefix (the initial state, absent, if the prefix is empty).
    pub fn state_after_prefix(&self) -> ModelState {
        self.prefix.last().map_or(
            ModelState {
                value: None,
                revision_floor: 0,
            },
            |p| p.state_after.clone(),
        )
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {}: history is not linearizable ({} ops",
            fmt_value(&self.key),
            self.ops_total
        )?;
        if !self.ignored_unknown.is_empty() {
            write!(
                f,
                ", {} unobservable unknown-outcome ops ignored",
                self.ignored_unknown.len()
            )?;
        }
        writeln!(f, ", {} search steps)", self.steps)?;
        writeln!(
            f,
            "  longest linearizable prefix found ({} ops), starting from absent:",
            self.prefix.len()
        )?;
        for (n, p) in self.prefix.iter().enumerate() {
            writeln!(f, "    {:>4}. {}  =>  {}", n + 1, p.op_desc, p.state_after)?;
        }
        writeln!(f, "  state after the prefix: {}", self.state_after_prefix())?;
        if let Some((_, desc, t)) = &self.deadline {
            writeln!(
                f,
                "  {desc} completed at t={t}, so one of these had to come next, and none can:"
            )?;
        } else {
            writeln!(f, "  none of these can come next:")?;
        }
        for b in &self.blocked {
            writeln!(f, "    {}\n        -> {}", b.op_desc, b.reason)?;
        }
        if !self.unknown_candidates.is_empty() {
            let ids: Vec<String> = self.unknown_candidates.iter().map(|id| format!("#{id}")).collect();
            writeln!(
                f,
                "  (unknown-outcome ops {} could also have taken effect here; that does not help either)",
                ids.join(", ")
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Ok => write!(f, "linearizable"),
            Verdict::Violation(e) => write!(f, "{e}"),
            Verdict::Unknown { steps } => {
                write!(f, "unknown: search budget exhausted after {steps} steps (NOT a pass)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Instant;

    // ---- helpers for hand-written histories -------------------------------------------------------------------

    struct H(Vec<Op>);

    impl H {
        fn new() -> Self {
            H(Vec::new())
        }
        fn push(&mut self, client: u64, invoke: u64, complete: Option<u64>, kind: OpKind) -> &mut Self {
            let id = self.0.len();
            self.0.push(Op {
                id,
                client,
                invoke,
                complete,
                key: b"k".to_vec(),
                kind,
            });
            self
        }
        fn put(&mut self, inv: u64, comp: u64, v: &str, rev: u64) -> &mut Self {
            self.push(
                1,
                inv,
                Some(comp),
                OpKind::Put {
                    value: v.into(),
                    revision: Some(rev),
                },
            )
        }
        fn put_unknown(&mut self, inv: u64, v: &str) -> &mut Self {
            self.push(
                2,
                inv,
                None,
                OpKind::Put {
                    value: v.into(),
                    revision: None,
                },
            )
        }
        fn get(&mut self, inv: u64, comp: u64, obs: Option<(&str, u64)>) -> &mut Self {
            let observed = obs.map(|(v, r)| (v.as_bytes().to_vec(), r));
            self.push(3, inv, Some(comp), OpKind::Get { observed })
        }
        fn del(&mut self, inv: u64, comp: u64, rev: u64, deleted: Option<u64>) -> &mut Self {
            self.push(
                4,
                inv,
                Some(comp),
                OpKind::Delete {
                    revision: Some(rev),
                    deleted,
                },
            )
        }
        fn del_unknown(&mut self, inv: u64) -> &mut Self {
            self.push(
                5,
                inv,
                None,
                OpKind::Delete {
                    revision: None,
                    deleted: None,
                },
            )
        }
        fn verdict(&self) -> Verdict {
            check_key(&self.0)
        }
    }

    fn assert_ok(h: &H) {
        match h.verdict() {
            Verdict::Ok => {}
            v => panic!("expected Ok, got {v}"),
        }
    }

    fn assert_violation(h: &H) -> Explanation {
        match h.verdict() {
            Verdict::Violation(e) => e,
            v => panic!("expected a violation, got {v}"),
        }
    }

    // ---- hand-written cases -------------------------------------------------------------------------------------

    #[test]
    fn empty_history_is_ok() {
        assert_eq!(check_key(&[]), Verdict::Ok);
    }

    #[test]
    fn sequential_history_ok() {
        let mut h = H::new();
        h.get(0, 1, None)
            .put(2, 3, "a", 5)
            .get(4, 5, Some(("a", 5)))
            .put(6, 7, "b", 9)
            .get(8, 9, Some(("b", 9)))
            .del(10, 11, 12, Some(1))
            .get(12, 13, None);
        assert_ok(&h);
    }

    #[test]
    fn concurrent_put_and_get_either_order() {
        for obs in [None, Some(("a", 5))] {
            let mut h = H::new();
            h.put(0, 10, "a", 5).get(2, 8, obs);
            assert_ok(&h);
        }
    }

    #[test]
    fn stale_read_is_violation() {
        let mut h = H::new();
        h.put(0, 10, "a", 5).put(20, 30, "b", 6).get(40, 50, Some(("a", 5)));
        let e = assert_violation(&h);
        // Writing b would make the read impossible, and b completed before the read was invoked.
        assert_eq!(e.prefix.iter().map(|p| p.op).collect::<Vec<_>>(), vec![0]);
        assert_eq!(e.deadline.as_ref().map(|d| d.0), Some(1));
        assert_eq!(e.blocked.len(), 1);
        assert_eq!(e.blocked[0].op, 1);
        let text = e.to_string();
        assert!(
            text.contains("then Get#2 c3 [t=40..50] observed (a, rev 5) could never be linearized"),
            "{text}"
        );
        assert!(text.contains("longest linearizable prefix"), "{text}");
        // With the read concurrent to b, the read itself is what cannot be placed.
        let mut h = H::new();
        h.put(0, 10, "a", 5).put(20, 30, "b", 6).get(25, 50, Some(("a", 6)));
        let e = assert_violation(&h);
        assert!(
            e.to_string().contains("observed (a, rev 6) but state is (b, rev 6)"),
            "{e}"
        );
    }

    #[test]
    fn read_of_never_written_value_is_violation() {
        let mut h = H::new();
        h.put(0, 10, "a", 5).get(20, 30, Some(("zzz", 7)));
        assert_violation(&h);
        let mut h = H::new();
        h.get(0, 10, Some(("a", 1)));
        assert_violation(&h);
    }

    #[test]
    fn wrong_revision_read_is_violation() {
        let mut h = H::new();
        h.put(0, 10, "a", 5).get(20, 30, Some(("a", 6)));
        assert_violation(&h);
    }

    #[test]
    fn unknown_put_later_observed_is_ok() {
        let mut h = H::new();
        h.put(0, 10, "a", 5)
            .put_unknown(20, "b")
            .get(100, 110, Some(("b", 9)))
            .get(120, 130, Some(("b", 9)));
        assert_ok(&h);
        // Once its revision is learned, it must stay the same.
        let mut h = H::new();
        h.put(0, 10, "a", 5)
            .put_unknown(20, "b")
            .get(100, 110, Some(("b", 9)))
            .get(120, 130, Some(("b", 10)));
        assert_violation(&h);
    }

    #[test]
    fn unknown_put_observed_before_it_was_invoked_is_violation() {
        let mut h = H::new();
        h.put(0, 10, "a", 5).get(20, 30, Some(("b", 9))).put_unknown(40, "b");
        assert_violation(&h);
    }

    #[test]
    fn unknown_put_never_observed_is_ok() {
        let mut h = H::new();
        h.put(0, 10, "a", 5).put_unknown(20, "b").get(100, 110, Some(("a", 5)));
        assert_ok(&h);
        // It may also have happened: a later read may see it or the old value.
        let mut h = H::new();
        h.put(0, 10, "a", 5)
            .put_unknown(20, "b")
            .get(100, 110, Some(("a", 5)))
            .get(200, 210, Some(("b", 8)));
        assert_ok(&h);
    }

    #[test]
    fn unknown_put_observed_with_revision_below_later_known_write_is_violation() {
        // The read saw b at rev 12 before c was written at rev 10: impossible.
        let mut h = H::new();
        h.put(0, 10, "a", 5)
            .put_unknown(20, "b")
            .get(30, 40, Some(("b", 12)))
            .put(50, 60, "c", 10);
        assert_violation(&h);
        // b at rev 7 fits between 5 and 10.
        let mut h = H::new();
        h.put(0, 10, "a", 5)
            .put_unknown(20, "b")
            .get(30, 40, Some(("b", 7)))
            .put(50, 60, "c", 10);
        assert_ok(&h);
        // b observed with a revision not above the earlier known write.
        let mut h = H::new();
        h.put(0, 10, "a", 5).put_unknown(20, "b").get(30, 40, Some(("b", 5)));
        assert_violation(&h);
    }

    #[test]
    fn unknown_write_consumes_an_integer_revision() {
        // put a@5, delete@6; the unknown put must have happened for the second delete to find the key, so it has
        // a revision >= 7 and the second delete needs >= 8.
        let mut h = H::new();
        h.put(0, 10, "a", 5)
            .del(11, 15, 6, Some(1))
            .put_unknown(16, "b")
            .del(20, 25, 7, Some(1));
        assert_violation(&h);
        let mut h = H::new();
        h.put(0, 10, "a", 5)
            .del(11, 15, 6, Some(1))
            .put_unknown(16, "b")
            .del(20, 25, 8, Some(1));
        assert_ok(&h);
    }

    #[test]
    fn revision_order_contradicting_real_time_is_violation() {
        let mut h = H::new();
        h.put(0, 10, "a", 10).put(20, 30, "b", 5);
        assert_violation(&h);
        // Concurrent: b can be linearized first.
        let mut h = H::new();
        h.put(0, 10, "a", 10).put(5, 30, "b", 5).get(40, 50, Some(("a", 10)));
        assert_ok(&h);
        // Equal revisions for two writes are never possible.
        let mut h = H::new();
        h.put(0, 10, "a", 5).put(5, 30, "b", 5);
        assert_violation(&h);
    }

    #[test]
    fn delete_semantics() {
        // Delete of an absent key: no-op reporting the current revision (may equal the last one).
        let mut h = H::new();
        h.del(0, 1, 0, Some(0))
            .put(2, 3, "a", 5)
            .del(4, 5, 6, Some(1))
            .del(6, 7, 6, Some(0))
            .get(8, 9, None);
        assert_ok(&h);
        // A no-op delete cannot report a revision below one already seen.
        let mut h = H::new();
        h.put(2, 3, "a", 5).del(4, 5, 6, Some(1)).del(6, 7, 5, Some(0));
        assert_violation(&h);
        // A removing delete needs a fresh revision.
        let mut h = H::new();
        h.put(2, 3, "a", 5).del(4, 5, 5, Some(1));
        assert_violation(&h);
        // deleted=1 on an absent key, deleted=0 on a present key.
        let mut h = H::new();
        h.del(0, 1, 3, Some(1));
        assert_violation(&h);
        let mut h = H::new();
        h.put(0, 1, "a", 5).del(2, 3, 6, Some(0));
        assert_violation(&h);
        // deleted unknown: either is fine.
        let mut h = H::new();
        h.del(0, 1, 0, None)
            .put(2, 3, "a", 5)
            .del(4, 5, 6, None)
            .get(6, 7, None);
        assert_ok(&h);
        // Read of the deleted value after the delete completed.
        let mut h = H::new();
        h.put(0, 1, "a", 5).del(2, 3, 6, Some(1)).get(4, 5, Some(("a", 5)));
        assert_violation(&h);
        // Unknown-outcome delete that someone observed.
        let mut h = H::new();
        h.put(0, 1, "a", 5).del_unknown(2).get(10, 11, None).put(12, 13, "b", 7);
        assert_ok(&h);
        // ... whose revision makes a following write at rev 6 impossible.
        let mut h = H::new();
        h.put(0, 1, "a", 5).del_unknown(2).get(10, 11, None).put(12, 13, "b", 6);
        assert_violation(&h);
        // deleted > 1 is impossible for one key.
        let mut h = H::new();
        h.put(0, 1, "a", 5).del(2, 3, 6, Some(2));
        assert_violation(&h);
    }

    #[test]
    fn equal_timestamps_are_concurrent() {
        // The put completes at 10 and the read is invoked at 10: they overlap, so the read may precede the put.
        let mut h = H::new();
        h.put(0, 10, "a", 5).get(10, 20, None);
        assert_ok(&h);
        let mut h = H::new();
        h.put(0, 10, "a", 5).get(11, 20, None);
        assert_violation(&h);
        // Zero-length operations at the same instant.
        let mut h = H::new();
        h.put(5, 5, "a", 5)
            .get(5, 5, None)
            .put(5, 5, "b", 6)
            .get(5, 5, Some(("a", 5)));
        assert_ok(&h);
    }

    #[test]
    fn budget_exhaustion_is_unknown_not_ok() {
        let mut h = H::new();
        for i in 0..12 {
            // Acknowledged puts whose revision was not reported: only the final read could order them.
            h.push(
                1,
                0,
                Some(100),
                OpKind::Put {
                    value: format!("v{i}").into(),
                    revision: None,
                },
            );
        }
        h.get(200, 300, Some(("nope", 1)));
        match check_key_with_budget(&h.0, 50) {
            Verdict::Unknown { steps } => assert!(steps > 50),
            v => panic!("expected Unknown, got {v}"),
        }
        assert!(matches!(h.verdict(), Verdict::Violation(_)));
    }

    #[test]
    fn check_partitions_by_key() {
        let op = |id, key: &str, inv, kind| Op {
            id,
            client: 1,
            invoke: inv,
            complete: Some(inv + 1),
            key: key.into(),
            kind,
        };
        let put = |v: &str, r| OpKind::Put {
            value: v.into(),
            revision: Some(r),
        };
        let get = |v: &str, r| OpKind::Get {
            observed: Some((v.into(), r)),
        };
        let history = vec![
            op(0, "x", 0, put("a", 1)),
            op(1, "y", 2, put("b", 2)),
            op(2, "x", 4, get("a", 1)),
            op(3, "y", 6, get("c", 3)),
        ];
        let res = check(&history);
        assert_eq!(res.len(), 2);
        assert_eq!(res[0].0, b"x");
        assert_eq!(res[0].1, Verdict::Ok);
        assert_eq!(res[1].0, b"y");
        match &res[1].1 {
            Verdict::Violation(e) => {
                assert_eq!(e.key, b"y");
                assert_eq!(e.blocked[0].op, 3);
            }
            v => panic!("expected a violation, got {v}"),
        }
    }

    #[test]
    fn explanation_reports_ignored_unknown_ops_and_states() {
        let mut h = H::new();
        h.put(0, 10, "a", 5)
            .put_unknown(11, "never-seen")
            .put_unknown(12, "b")
            .get(20, 30, Some(("b", 5)));
        let e = assert_violation(&h);
        assert_eq!(e.ignored_unknown, vec![1]);
        assert_eq!(e.unknown_candidates, vec![2]);
        assert_eq!(e.deadline.as_ref().map(|d| d.0), Some(3));
        let text = e.to_string();
        assert!(text.contains("observed (b, rev 5) but state is (a, rev 5)"), "{text}");
        assert!(text.contains("if Put#2"), "{text}");
        assert!(text.contains("must be >= 6"), "{text}");
        assert!(text.contains("1 unobservable unknown-outcome ops ignored"), "{text}");
        eprintln!("{text}");
    }

    // ---- brute-force reference checker --------------------------------------------------------------------------

    /// A revision-carrying point of a sequential execution: a write (strictly above everything before) or a no-op
    /// delete (at least everything before), with its revision if known.
    struct Point {
        strict: bool,
        rev: Option<u64>,
    }

    /// Does the sequence (indices into `ops`) satisfy the spec? Revisions are solved after the fact: reads pin the
    /// unknown revision of the write they observe, then the chain of revisions must be increasing integers.
    fn sequence_valid(ops: &[Op], seq: &[usize]) -> bool {
        let mut points: Vec<Point> = Vec::new();
        let mut current: Option<(&[u8], usize)> = None;
        for &i in seq {
            match &ops[i].kind {
                OpKind::Put { value, revision } => {
                    points.push(Point {
                        strict: true,
                        rev: *revision,
                    });
                    current = Some((value, points.len() - 1));
                }
                OpKind::Delete { revision, deleted } => {
                    let present = current.is_some();
                    match deleted {
                        Some(0) if present => return false,
                        Some(1) if !present => return false,
                        Some(n) if *n > 1 => return false,
                        _ => {}
                    }
                    if present {
                        points.push(Point {
                            strict: true,
                            rev: *revision,
                        });
                    } else if revision.is_some() {
                        points.push(Point {
                            strict: false,
                            rev: *revision,
                        });
                    }
                    current = None;
                }
                OpKind::Get { observed } => match (observed, current) {
                    (None, None) => {}
                    (Some((v, r)), Some((cv, idx))) if v.as_slice() == cv => match points[idx].rev {
                        Some(x) if x == *r => {}
                        Some(_) => return false,
                        None => points[idx].rev = Some(*r),
                    },
                    _ => return false,
                },
            }
        }
        let mut lo = 0u64;
        for p in &points {
            let min = if p.strict { lo + 1 } else { lo };
            match p.rev {
                Some(r) if r < min => return false,
                Some(r) => lo = r,
                None => lo = min,
            }
        }
        true
    }

    /// Exhaustive search over all orders of all subsets (unknown-outcome ops may be left out) that respect real-time
    /// order. Prefixes are checked as it goes (a sequence with an invalid prefix is invalid).
    fn brute_force(ops: &[Op]) -> bool {
        fn rec(ops: &[Op], seq: &mut Vec<usize>, used: &mut [bool]) -> bool {
            if !sequence_valid(ops, seq) {
                return false;
            }
            if ops.iter().zip(used.iter()).all(|(o, &u)| u || o.complete.is_none()) {
                return true;
            }
            for j in 0..ops.len() {
                if used[j] {
                    continue;
                }
                let blocked =
                    (0..ops.len()).any(|k| !used[k] && k != j && ops[k].complete.is_some_and(|c| c < ops[j].invoke));
                if blocked {
                    continue;
                }
                used[j] = true;
                seq.push(j);
                let ok = rec(ops, seq, used);
                seq.pop();
                used[j] = false;
                if ok {
                    return true;
                }
            }
            false
        }
        rec(ops, &mut Vec::new(), &mut vec![false; ops.len()])
    }

    // ---- random small histories ---------------------------------------------------------------------------------

    #[derive(Clone, Debug)]
    struct RawOp {
        start: u64,
        dur: u64,
        kind: u8,
        value: u8,
        unknown: bool,
        applied: bool,
        lin: u8,
        gap: u8,
        hide_deleted: bool,
    }

    #[derive(Clone, Debug)]
    struct RawHistory {
        ops: Vec<RawOp>,
        /// (op index, mutation kind) applied after simulating a correct store.
        mutation: Option<(usize, u8)>,
        /// Replace every read's observation by a random one.
        random_obs: bool,
    }

    const VALUES: [&str; 3] = ["a", "b", "c"];

    /// Simulates a correct store executing the raw ops at their linearization points, then (optionally) corrupts
    /// the result, so that both verdicts are common.
    fn build(raw: &RawHistory) -> Vec<Op> {
        let n = raw.ops.len();
        let mut ops: Vec<Op> = raw
            .ops
            .iter()
            .enumerate()
            .map(|(id, r)| {
                let unknown = r.unknown && r.kind != 2;
                let kind = match r.kind {
                    0 => OpKind::Put {
                        value: VALUES[r.value as usize].into(),
                        revision: None,
                    },
                    1 => OpKind::Delete {
                        revision: None,
                        deleted: None,
                    },
                    _ => OpKind::Get { observed: None },
                };
                Op {
                    id,
                    client: id as u64,
                    invoke: r.start,
                    complete: if unknown { None } else { Some(r.start + r.dur) },
                    key: b"k".to_vec(),
                    kind,
                }
            })
            .collect();
        // Linearization points, in tenths of a time unit.
        let mut order: Vec<(u64, usize)> = Vec::new();
        for (i, r) in raw.ops.iter().enumerate() {
            match ops[i].complete {
                Some(_) => order.push((r.start * 10 + r.dur * 10 * u64::from(r.lin) / 100, i)),
                None if r.applied => order.push((r.start * 10 + u64::from(r.lin), i)),
                None => {}
            }
        }
        order.sort_unstable();
        let mut rev = 0u64;
        let mut state: Option<(Vec<u8>, u64)> = None;
        for &(_, i) in &order {
            let r = &raw.ops[i];
            let known = ops[i].complete.is_some();
            match &mut ops[i].kind {
                OpKind::Put { value, revision } => {
                    rev += 1 + u64::from(r.gap);
                    state = Some((value.clone(), rev));
                    if known {
                        *revision = Some(rev);
                    }
                }
                OpKind::Delete { revision, deleted } => {
                    let d = if state.is_some() {
                        rev += 1 + u64::from(r.gap);
                        1
                    } else {
                        rev += u64::from(r.gap);
                        0
                    };
                    state = None;
                    if known {
                        *revision = Some(rev);
                        *deleted = if r.hide_deleted { None } else { Some(d) };
                    }
                }
                OpKind::Get { observed } => *observed = state.clone(),
            }
        }
        if raw.random_obs {
            for (op, r) in ops.iter_mut().zip(&raw.ops) {
                if let OpKind::Get { observed } = &mut op.kind {
                    *observed = if r.value == 0 && r.gap == 0 {
                        None
                    } else {
                        Some((VALUES[r.value as usize].into(), 1 + u64::from(r.lin % 6)))
                    };
                }
            }
        }
        if let Some((idx, m)) = raw.mutation {
            let op = &mut ops[idx % n];
            match (&mut op.kind, m) {
                (OpKind::Get { observed }, 0) => {
                    *observed = match observed.take() {
                        None => Some(("a".into(), 1)),
                        Some((v, r)) if v == b"a" => Some(("b".into(), r)),
                        Some(_) => None,
                    }
                }
                (OpKind::Get { observed: Some((_, r)) }, 1) => *r += 1,
                (OpKind::Get { observed: Some((_, r)) }, _) => *r = r.saturating_sub(1),
                (OpKind::Put { revision: Some(r), .. }, 1) => *r += 2,
                (OpKind::Put { revision: Some(r), .. }, _) => *r = r.saturating_sub(1),
                (OpKind::Delete { deleted: Some(d), .. }, 0) => *d = 1 - *d,
                (OpKind::Delete { revision: Some(r), .. }, _) => *r = r.saturating_sub(1),
                _ => {
                    // Shift the op later in time: its effect now appears too early.
                    op.invoke += 6;
                    op.complete = op.complete.map(|c| c + 6);
                }
            }
        }
        ops
    }

    fn raw_op() -> impl Strategy<Value = RawOp> {
        (
            0..20u64,
            0..8u64,
            0..3u8,
            0..3u8,
            proptest::bool::weighted(0.25),
            any::<bool>(),
            0..=100u8,
            0..3u8,
            proptest::bool::weighted(0.2),
        )
            .prop_map(
                |(start, dur, kind, value, unknown, applied, lin, gap, hide_deleted)| RawOp {
                    start,
                    dur,
                    kind,
                    value,
                    unknown,
                    applied,
                    lin,
                    gap,
                    hide_deleted,
                },
            )
    }

    fn raw_history() -> impl Strategy<Value = RawHistory> {
        (
            proptest::collection::vec(raw_op(), 1..=7),
            proptest::option::weighted(0.8, (0..7usize, 0..6u8)),
            proptest::bool::weighted(0.25),
        )
            .prop_map(|(ops, mutation, random_obs)| RawHistory {
                ops,
                mutation,
                random_obs,
            })
    }

    /// Small deterministic PRNG (SplitMix64) for the seeded tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// Same distribution as `raw_history()`, from a seeded PRNG.
    fn seeded_raw_history(rng: &mut Rng) -> RawHistory {
        let n = 1 + rng.below(7) as usize;
        let ops = (0..n)
            .map(|_| RawOp {
                start: rng.below(20),
                dur: rng.below(8),
                kind: rng.below(3) as u8,
                value: rng.below(3) as u8,
                unknown: rng.chance(25),
                applied: rng.chance(50),
                lin: rng.below(101) as u8,
                gap: rng.below(3) as u8,
                hide_deleted: rng.chance(20),
            })
            .collect();
        let mutation = rng.chance(80).then(|| (rng.below(7) as usize, rng.below(6) as u8));
        RawHistory {
            ops,
            mutation,
            random_obs: rng.chance(20),
        }
    }

    fn wgl_says_ok(ops: &[Op]) -> bool {
        match check_key(ops) {
            Verdict::Ok => true,
            Verdict::Violation(_) => false,
            Verdict::Unknown { steps } => panic!("budget exhausted on a tiny history after {steps} steps"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

        #[test]
        fn agrees_with_brute_force(raw in raw_history()) {
            let ops = build(&raw);
            prop_assert_eq!(wgl_says_ok(&ops), brute_force(&ops), "history: {:#?}", ops);
        }
    }

    #[test]
    fn seeded_cross_check_has_a_healthy_mix_of_verdicts() {
        let mut rng = Rng(0x5EED);
        let (mut ok, mut bad) = (0, 0);
        for _ in 0..10_000 {
            let ops = build(&seeded_raw_history(&mut rng));
            let expected = brute_force(&ops);
            assert_eq!(wgl_says_ok(&ops), expected, "history: {ops:#?}");
            if expected {
                ok += 1;
            } else {
                bad += 1;
            }
        }
        eprintln!("seeded cross-check: {ok} linearizable, {bad} violations");
        assert!(
            ok >= 2500 && bad >= 2500,
            "unbalanced generator: {ok} ok, {bad} violations"
        );
    }

    #[test]
    fn brute_force_agrees_on_hand_written_cases() {
        let mut h = H::new();
        h.put(0, 1, "a", 5)
            .del(11, 15, 6, Some(1))
            .put_unknown(16, "b")
            .del(20, 25, 7, Some(1));
        assert!(!brute_force(&h.0));
        let mut h = H::new();
        h.put(0, 1, "a", 5)
            .del(11, 15, 6, Some(1))
            .put_unknown(16, "b")
            .del(20, 25, 8, Some(1));
        assert!(brute_force(&h.0));
    }

    // ---- performance --------------------------------------------------------------------------------------------

    /// Simulates `clients` clients running `n` ops against a correct store with random latencies; about 1% of the
    /// ops get no answer (and half of those still take effect). Values are unique per put.
    fn simulate_register(seed: u64, n: usize, clients: usize, unknown_percent: u64) -> Vec<Op> {
        let mut rng = Rng(seed);
        let mut free_at = vec![0u64; clients];
        let mut ops = Vec::with_capacity(n);
        let mut lin_points: Vec<(u64, usize)> = Vec::new();
        for id in 0..n {
            let c = (0..clients).min_by_key(|&c| (free_at[c], c)).unwrap_or(0);
            let invoke = free_at[c] + rng.below(20);
            let latency = 1 + rng.below(200);
            let unknown = rng.chance(unknown_percent);
            let roll = rng.below(100);
            let kind = if roll < 40 {
                OpKind::Put {
                    value: format!("v{id}").into_bytes(),
                    revision: None,
                }
            } else if roll < 50 {
                OpKind::Delete {
                    revision: None,
                    deleted: None,
                }
            } else {
                OpKind::Get { observed: None }
            };
            let unknown = unknown && !matches!(kind, OpKind::Get { .. });
            let (complete, lin) = if unknown {
                free_at[c] = invoke + 1000;
                (None, rng.chance(50).then(|| invoke + rng.below(500)))
            } else {
                free_at[c] = invoke + latency;
                (Some(invoke + latency), Some(invoke + rng.below(latency + 1)))
            };
            if let Some(t) = lin {
                lin_points.push((t, id));
            }
            ops.push(Op {
                id,
                client: c as u64,
                invoke,
                complete,
                key: b"k".to_vec(),
                kind,
            });
        }
        lin_points.sort_unstable();
        let mut rev = 100u64;
        let mut state: Option<(Vec<u8>, u64)> = None;
        for &(_, i) in &lin_points {
            let known = ops[i].complete.is_some();
            let gap = rng.below(3);
            match &mut ops[i].kind {
                OpKind::Put { value, revision } => {
                    rev += 1 + gap;
                    state = Some((value.clone(), rev));
                    if known {
                        *revision = Some(rev);
                    }
                }
                OpKind::Delete { revision, deleted } => {
                    let d = u64::from(state.is_some());
                    rev += d + gap;
                    state = None;
                    if known {
                        *revision = Some(rev);
                        *deleted = Some(d);
                    }
                }
                OpKind::Get { observed } => *observed = state.clone(),
            }
        }
        ops
    }

    #[test]
    fn performance_linearizable_history() {
        for seed in 1..=3 {
            let ops = simulate_register(seed, 2000, 5, 1);
            let t = Instant::now();
            let v = check_key(&ops);
            let elapsed = t.elapsed();
            eprintln!("seed {seed}: 2000 ops checked in {elapsed:?}");
            assert_eq!(v, Verdict::Ok, "seed {seed}");
            assert!(elapsed.as_millis() < 1000, "too slow: {elapsed:?}");
        }
    }

    #[test]
    fn performance_harder_workloads() {
        // More concurrency and more unknown-outcome ops than the simulator usually produces.
        for (clients, unknown_percent) in [(5, 5), (10, 5), (20, 2)] {
            let ops = simulate_register(11, 2000, clients, unknown_percent);
            let t = Instant::now();
            let v = check_key(&ops);
            let elapsed = t.elapsed();
            eprintln!("{clients} clients, {unknown_percent}% unknown outcome: 2000 ops checked in {elapsed:?}");
            assert_eq!(v, Verdict::Ok);
            assert!(elapsed.as_millis() < 1000, "too slow: {elapsed:?}");
        }
    }

    #[test]
    fn performance_planted_stale_read_is_rejected() {
        let mut ops = simulate_register(7, 2000, 5, 1);
        // Find acknowledged puts p_old and p (p_old written before p) and a read invoked after p completed; make the
        // read return p_old's value.
        let acked_puts: Vec<(usize, u64)> = ops
            .iter()
            .filter_map(|o| match o.kind {
                OpKind::Put { revision: Some(r), .. } if o.id > 1000 => Some((o.id, r)),
                _ => None,
            })
            .collect();
        let (p, p_rev) = acked_puts[0];
        let (p_old, _) = ops
            .iter()
            .filter_map(|o| match &o.kind {
                OpKind::Put { revision: Some(r), .. } if *r < p_rev => Some((o.id, *r)),
                _ => None,
            })
            .max_by_key(|&(_, r)| r)
            .expect("an older put");
        let p_done = ops[p].complete.expect("acknowledged");
        let g = ops
            .iter()
            .position(|o| matches!(o.kind, OpKind::Get { .. }) && o.complete.is_some() && o.invoke > p_done)
            .expect("a later read");
        let OpKind::Put {
            value,
            revision: Some(r),
        } = ops[p_old].kind.clone()
        else {
            unreachable!()
        };
        ops[g].kind = OpKind::Get {
            observed: Some((value, r)),
        };
        let t = Instant::now();
        let v = check_key(&ops);
        let elapsed = t.elapsed();
        eprintln!("planted stale read at op {g}: verdict in {elapsed:?}");
        match v {
            Verdict::Violation(e) => {
                let text = e.to_string();
                let tail: Vec<&str> = text.lines().rev().take(8).collect();
                eprintln!(
                    "{}\n  ...\n{}",
                    text.lines().next().unwrap_or(""),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
                let text = e.to_string();
                assert!(text.contains(&format!("Get#{g}")), "{text}");
            }
            v => panic!("expected a violation, got {v}"),
        }
        assert!(elapsed.as_millis() < 1000, "too slow: {elapsed:?}");
    }
}
