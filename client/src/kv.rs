//! Key-value calls.

use crate::client::Client;
use crate::endpoints::MAX_DECODING_MESSAGE_SIZE;
use crate::error::Error;
use crate::proto::kv_client::KvClient;
use crate::proto::{
    DeleteRequest, DeleteResponse, KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse,
};
use crate::retry::{request, Idempotency};

fn kv(channel: tonic::transport::Channel) -> KvClient<tonic::transport::Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
}

impl Client {
    /// Sets `key` to `value`. A write: deduplicated across retries.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<PutResponse, Error> {
        self.put_with(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
    }

    /// Sends a put with every option (e.g. `prev_kv`). The client assigns a
    /// fresh `request_id`, replacing any set by the caller.
    pub async fn put_with(&self, mut req: PutRequest) -> Result<PutResponse, Error> {
        req.request_id = Some(self.next_request_id());
        self.call("Put", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { kv(channel).put(request(req, budget)).await }
        })
        .await
    }

    /// Reads one key with a linearizable read. `None` when it does not exist.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, Error> {
        let response = self
            .range(RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await?;
        Ok(response.kvs.into_iter().next())
    }

    /// Same as [`Client::range`]; reads with every option (`serializable`,
    /// `keys_only`, ...).
    pub async fn get_with(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        self.range(req).await
    }

    /// Reads a key or a prefix. Linearizable unless `req.serializable` is
    /// set, in which case the answering node serves its local (possibly
    /// stale) state and says so in the response header.
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        self.call("Range", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { kv(channel).range(request(req, budget)).await }
        })
        .await
    }

    /// Reads every key starting with `prefix` (linearizable, up to the
    /// server's limit; check `more`). An empty prefix reads all keys.
    pub async fn range_prefix(&self, prefix: impl Into<Vec<u8>>) -> Result<RangeResponse, Error> {
        self.range(RangeRequest {
            key: prefix.into(),
            prefix: true,
            ..Default::default()
        })
        .await
    }

    /// Deletes `key`. A write: deduplicated across retries. `deleted` is 0
    /// when the key did not exist.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<DeleteResponse, Error> {
        self.delete_with(DeleteRequest {
            key: key.into(),
            ..Default::default()
        })
        .await
    }

    /// Deletes every key starting with `prefix`.
    pub async fn delete_prefix(&self, prefix: impl Into<Vec<u8>>) -> Result<DeleteResponse, Error> {
        self.delete_with(DeleteRequest {
            key: prefix.into(),
            prefix: true,
            ..Default::default()
        })
        .await
    }

    /// Sends a delete with every option (`prefix`, `prev_kv`). The client
    /// assigns a fresh `request_id`, replacing any set by the caller.
    pub async fn delete_with(&self, mut req: DeleteRequest) -> Result<DeleteResponse, Error> {
        req.request_id = Some(self.next_request_id());
        self.call("Delete", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { kv(channel).delete(request(req, budget)).await }
        })
        .await
    }

    /// Runs a compare-and-set transaction (a [`TxnRequest`] or a
    /// [`TxnBuilder`](crate::TxnBuilder)). A write: deduplicated across
    /// retries, so a retried transaction reports the outcome of its first
    /// application. A failed compare is not an error: `succeeded` is false
    /// and the `failure` branch ran.
    pub async fn txn(&self, req: impl Into<TxnRequest>) -> Result<TxnResponse, Error> {
        let mut req = req.into();
        req.request_id = Some(self.next_request_id());
        self.call("Txn", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { kv(channel).txn(request(req, budget)).await }
        })
        .await
    }
}
