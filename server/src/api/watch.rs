//! `roster.v1.Watch`: every event after a revision, filtered by key prefixes
//! and/or coordination events, in order, with no gap and no duplicate.
//!
//! The stream pages through the replicated watch history
//! (`State::events_page`, [`limits::WATCH_PAGE_EVENTS`] events at a time,
//! always whole revisions) of the answering node's applied state, waking on
//! its revision watch. The history is part of the state and of its snapshot,
//! so a watcher that reconnects to any node with its last revision resumes
//! exactly after it.
//!
//! * The first response carries no events: its `header.revision` is the
//!   revision the watch starts after (with `after_revision` 0, the current
//!   revision after a read index with the leader).
//! * Compaction: when the events asked for are no longer retained, the
//!   stream sends one response with `compacted_before` (the oldest available
//!   revision) and ends with OK.
//! * Memory per stream is bounded: at most [`limits::WATCH_BUFFER`]
//!   responses of about [`limits::WATCH_MESSAGE_BYTES`] are queued; a reader
//!   slower than that makes the stream wait, and if the history moves past
//!   it meanwhile it gets the compacted answer — never unbounded buffering.
//! * At most [`limits::MAX_WATCHERS`] streams per node (shared with
//!   `Observe` and `Campaign`), `RESOURCE_EXHAUSTED` beyond.
//! * The stream ends with `UNAVAILABLE` when the node shuts down.

use std::pin::Pin;

use futures::Stream;
use roster_proto::v1 as pb;
use roster_proto::v1::watch_server::Watch;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::common::{self, StreamSlot, Streams};
use super::{convert, deadline, NodeContext};
use crate::limits;
use crate::state::Event;

/// Most key prefixes one watch may name.
pub const MAX_WATCH_PREFIXES: usize = 64;

pub struct WatchService {
    ctx: NodeContext,
    streams: Streams,
}

impl WatchService {
    pub fn new(ctx: NodeContext, streams: Streams) -> Self {
        Self { ctx, streams }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// What a watcher asked for.
#[derive(Clone, Debug)]
struct Filter {
    prefixes: Vec<Vec<u8>>,
    coordination: bool,
}

impl Filter {
    fn wants(&self, event: &Event) -> bool {
        match event {
            Event::Put(kv) | Event::Delete(kv) => self.prefixes.iter().any(|p| kv.key.starts_with(p)),
            _ => self.coordination,
        }
    }
}

/// Packs filtered events into responses of about
/// [`limits::WATCH_MESSAGE_BYTES`]: whole revisions, except that a revision
/// larger than that is split over consecutive responses marked `fragment`.
fn pack(events: Vec<(u64, usize, pb::Event)>, header: &pb::ResponseHeader) -> Vec<pb::WatchResponse> {
    let mut out = Vec::new();
    let mut current: Vec<pb::Event> = Vec::new();
    let mut bytes = 0usize;
    for (revision, size, event) in events {
        if !current.is_empty() && bytes + size > limits::WATCH_MESSAGE_BYTES {
            let fragment = current.last().is_some_and(|e| e.revision == revision);
            out.push(pb::WatchResponse {
                header: Some(*header),
                events: std::mem::take(&mut current),
                compacted_before: 0,
                fragment,
            });
            bytes = 0;
        }
        bytes += size;
        current.push(event);
    }
    if !current.is_empty() {
        out.push(pb::WatchResponse {
            header: Some(*header),
            events: current,
            compacted_before: 0,
            fragment: false,
        });
    }
    out
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        if req.key_prefixes.is_empty() && !req.coordination {
            return Err(Status::invalid_argument(
                "nothing to watch: give key prefixes (an empty prefix is every key) and/or coordination",
            ));
        }
        if req.key_prefixes.len() > MAX_WATCH_PREFIXES {
            return Err(Status::invalid_argument(format!(
                "{} key prefixes; the limit is {MAX_WATCH_PREFIXES}",
                req.key_prefixes.len()
            )));
        }
        if let Some(p) = req.key_prefixes.iter().find(|p| p.len() > limits::MAX_KEY_BYTES) {
            return Err(Status::invalid_argument(format!(
                "key prefix is {} bytes; the limit is {} bytes",
                p.len(),
                limits::MAX_KEY_BYTES
            )));
        }
        let slot = self.streams.limit.acquire()?;
        let after = if req.after_revision == 0 {
            self.ctx.read_barrier(deadline).await?;
            self.ctx.state.read().state.revision()
        } else {
            req.after_revision
        };
        let filter = Filter {
            prefixes: req.key_prefixes,
            coordination: req.coordination,
        };
        let (tx, rx) = mpsc::channel(limits::WATCH_BUFFER);
        let created = pb::WatchResponse {
            header: Some(common::header(&self.ctx, after, true)),
            ..pb::WatchResponse::default()
        };
        let _ = tx.try_send(Ok(created));
        tokio::spawn(run(self.ctx.clone(), self.streams.clone(), filter, after, tx, slot));
        Ok(Response::new(Box::pin(common::until_stopped(rx, self.streams.clone()))))
    }
}

/// One look at the history.
enum Page {
    Events {
        responses: Vec<pb::WatchResponse>,
        /// The newest revision looked at (filtered out or not).
        through: Option<u64>,
        more: bool,
    },
    Compacted(pb::WatchResponse),
}

async fn run(
    ctx: NodeContext,
    streams: Streams,
    filter: Filter,
    mut after: u64,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    _slot: StreamSlot,
) {
    let mut revisions = ctx.state.revision_watch();
    loop {
        revisions.borrow_and_update();
        let page = {
            let applied = ctx.state.read();
            let state = &applied.state;
            let header = common::header(&ctx, state.revision(), true);
            match state.events_page(after, limits::WATCH_PAGE_EVENTS) {
                Ok((events, more)) => {
                    let through = events.last().map(|(r, _)| *r);
                    let wanted = events
                        .iter()
                        .filter(|(_, e)| filter.wants(e))
                        .map(|(r, e)| (*r, e.approx_bytes(), convert::event(*r, e)))
                        .collect();
                    Page::Events {
                        responses: pack(wanted, &header),
                        through,
                        more,
                    }
                }
                Err(compacted) => Page::Compacted(pb::WatchResponse {
                    header: Some(header),
                    events: Vec::new(),
                    compacted_before: compacted.oldest_available,
                    fragment: false,
                }),
            }
        };
        let more = match page {
            Page::Compacted(response) => {
                let _ = tx.send(Ok(response)).await;
                return;
            }
            Page::Events {
                responses,
                through,
                more,
            } => {
                for response in responses {
                    // Waits while the reader is behind: the buffer is bounded.
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
                if let Some(through) = through {
                    after = through;
                }
                more
            }
        };
        if more {
            continue;
        }
        if !common::wait_for_revision(&mut revisions, &streams, &tx).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: u64, n: usize) -> (u64, usize, pb::Event) {
        (revision, n, pb::Event { revision, event: None })
    }

    #[test]
    fn packs_whole_revisions_and_splits_large_ones() {
        let header = pb::ResponseHeader::default();
        let big = limits::WATCH_MESSAGE_BYTES / 2 + 1;
        let out = pack(vec![put(1, 10), put(2, 10), put(3, 10)], &header);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].events.len(), 3);
        // Revision 2 has three big events: split, marked as fragments.
        let out = pack(
            vec![put(1, big), put(2, big), put(2, big), put(2, big), put(3, 1)],
            &header,
        );
        let shape: Vec<(Vec<u64>, bool)> = out
            .iter()
            .map(|r| (r.events.iter().map(|e| e.revision).collect(), r.fragment))
            .collect();
        assert_eq!(
            shape,
            vec![(vec![1], false), (vec![2], true), (vec![2], true), (vec![2, 3], false)]
        );
    }
}
