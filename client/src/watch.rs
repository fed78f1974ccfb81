//! [`Client::watch`]: every change from a revision on, resumed across
//! reconnects with no gap and no duplicate.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::Channel;

use crate::client::Client;
use crate::election::worth_retrying;
use crate::error::Error;
use crate::proto::watch_client::WatchClient;
use crate::proto::{Event, WatchRequest};
use crate::retry::{is_retryable, Backoff, Idempotency};

/// What to watch ([`Client::watch`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Deliver events with a revision greater than this; 0: from now on.
    pub after_revision: u64,
    /// Key prefixes (an empty prefix is every key). None: no key events.
    pub key_prefixes: Vec<Vec<u8>>,
    /// Also lease, role and topology events.
    pub coordination: bool,
}

impl WatchOptions {
    /// Resume after `revision`.
    #[must_use]
    pub fn after(mut self, revision: u64) -> Self {
        self.after_revision = revision;
        self
    }

    /// Adds a key prefix.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.key_prefixes.push(prefix.into());
        self
    }

    /// Includes coordination events.
    #[must_use]
    pub fn coordination(mut self, yes: bool) -> Self {
        self.coordination = yes;
        self
    }
}

/// One item of a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// The watch is established (first time only): events after `revision`
    /// follow. With `after_revision` 0, this is the revision "now" was.
    Started {
        /// The revision the watch starts after.
        revision: u64,
    },
    /// One change. Changes come in revision order; every change of a
    /// revision is delivered before any of the next.
    Change(Event),
    /// The requested history is gone: `oldest_available` is the oldest
    /// revision still retained. Re-read the state, then watch from its
    /// revision. The stream ends after this.
    Compacted {
        /// The oldest revision whose events are still available.
        oldest_available: u64,
    },
}

fn watch_client(channel: Channel) -> WatchClient<Channel> {
    WatchClient::new(channel).max_decoding_message_size(crate::endpoints::MAX_DECODING_MESSAGE_SIZE)
}

/// Splits what can be delivered from what must wait for the rest of a
/// fragmented revision. Returns the deliverable events, in order.
fn take_complete(pending: &mut Vec<Event>, fragment: bool) -> Vec<Event> {
    if !fragment {
        return std::mem::take(pending);
    }
    let Some(last) = pending.last().map(|e| e.revision) else {
        return Vec::new();
    };
    let split = pending.iter().position(|e| e.revision == last).unwrap_or(pending.len());
    let rest = pending.split_off(split);
    std::mem::replace(pending, rest)
}

impl Client {
    /// Watches changes (see [`WatchOptions`]).
    ///
    /// A broken stream (`UNAVAILABLE`, transport errors, a node shutting
    /// down) is re-opened on any node, with backoff, resuming after the last
    /// revision delivered: no gap, no duplicate (a revision split over
    /// several messages is delivered only once complete). When the history
    /// is gone the stream yields [`WatchEvent::Compacted`] and ends. An
    /// error the server gives as an answer (`INVALID_ARGUMENT`,
    /// `RESOURCE_EXHAUSTED`, ...) is yielded and ends the stream. Dropping
    /// the stream stops it.
    pub fn watch(&self, opts: WatchOptions) -> Pin<Box<dyn Stream<Item = Result<WatchEvent, Error>> + Send + 'static>> {
        let (tx, rx) = mpsc::channel(64);
        let client = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = watch_loop(client, opts, &tx) => {}
                () = tx.closed() => {}
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

async fn watch_loop(client: Client, opts: WatchOptions, tx: &mpsc::Sender<Result<WatchEvent, Error>>) {
    let policy = client.policy();
    let mut backoff = Backoff::new(policy.backoff_initial, policy.backoff_max);
    // The last revision delivered completely (or the start point).
    let mut last = opts.after_revision;
    let mut started = false;
    loop {
        let req = WatchRequest {
            after_revision: last,
            key_prefixes: opts.key_prefixes.clone(),
            coordination: opts.coordination,
        };
        let opened = client
            .call("Watch", Idempotency::Safe, move |channel, _budget| {
                let req = req.clone();
                async move { watch_client(channel).watch(tonic::Request::new(req)).await }
            })
            .await;
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) if worth_retrying(&e) => {
                tracing::debug!(error = %e, "watch: cannot open the stream; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let mut pending: Vec<Event> = Vec::new();
        let mut first = true;
        loop {
            let msg = match stream.message().await {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(status) if is_retryable(&status) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "watch stream broke; resuming");
                    break;
                }
                Err(status) => {
                    let _ = tx
                        .send(Err(Error::Rpc {
                            endpoint: client.current_endpoint(),
                            status,
                        }))
                        .await;
                    return;
                }
            };
            backoff = Backoff::new(policy.backoff_initial, policy.backoff_max);
            if msg.compacted_before > 0 {
                let _ = tx
                    .send(Ok(WatchEvent::Compacted {
                        oldest_available: msg.compacted_before,
                    }))
                    .await;
                return;
            }
            if first {
                first = false;
                if msg.events.is_empty() && last == 0 {
                    last = msg.header.map(|h| h.revision).unwrap_or(0);
                }
                if !started {
                    started = true;
                    if tx.send(Ok(WatchEvent::Started { revision: last })).await.is_err() {
                        return;
                    }
                }
            }
            pending.extend(msg.events);
            // Only whole revisions are taken; anything at or below `last`
            // was delivered before a reconnect.
            let batch: Vec<Event> = take_complete(&mut pending, msg.fragment)
                .into_iter()
                .filter(|e| e.revision > last)
                .collect();
            let through = batch.last().map(|e| e.revision);
            for event in batch {
                if tx.send(Ok(WatchEvent::Change(event))).await.is_err() {
                    return;
                }
            }
            if let Some(through) = through {
                last = last.max(through);
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(revision: u64) -> Event {
        Event { revision, event: None }
    }

    #[test]
    fn fragments_wait_for_the_rest_of_their_revision() {
        let mut pending = vec![ev(3), ev(4), ev(5), ev(5)];
        let out = take_complete(&mut pending, true);
        assert_eq!(out.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(pending.len(), 2);
        pending.push(ev(5));
        let out = take_complete(&mut pending, false);
        assert_eq!(out.len(), 3);
        assert!(pending.is_empty());
        let mut only = vec![ev(7)];
        assert!(take_complete(&mut only, true).is_empty());
        assert_eq!(only.len(), 1);
    }
}
