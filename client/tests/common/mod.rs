//! A fake Roster node: the generated `Kv` and `Cluster` services on
//! 127.0.0.1, with a scripted behaviour and a record of what it received.

#![allow(dead_code)] // each test crate uses a different subset

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roster_client::prelude::*;
use roster_client::proto::cluster_server::{Cluster, ClusterServer};
use roster_client::proto::kv_server::{Kv, KvServer};
use roster_client::proto::{
    DeleteResponse, Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberStatus, PutResponse,
    RangeResponse, RequestId, ResponseHeader, StatusRequest, StatusResponse, TxnResponse,
};
use roster_client::LEADER_HINT_METADATA;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Tolerance for "returns within the deadline": scheduling on a loaded
/// 2-core machine, not retries.
pub const SLACK: Duration = Duration::from_millis(300);

#[derive(Debug, Clone)]
pub enum Mode {
    /// Answer normally.
    Serve,
    /// `UNAVAILABLE`, optionally naming a leader.
    Unavailable { hint: Option<String> },
    /// `UNAVAILABLE` for the first `n` calls, then serve.
    FailFirst(usize),
    /// `INVALID_ARGUMENT`.
    Invalid,
    /// `NOT_FOUND`.
    NotFound,
    /// Never answer.
    Hang,
}

/// What a fake node saw, and how it behaves.
#[derive(Debug)]
pub struct Node {
    pub id: u64,
    pub mode: Mutex<Mode>,
    pub calls: AtomicUsize,
    pub request_ids: Mutex<Vec<Option<RequestId>>>,
    pub grpc_timeouts: Mutex<Vec<Option<String>>>,
    /// Values of the puts received.
    pub put_values: Mutex<Vec<Vec<u8>>>,
}

impl Node {
    pub fn new(id: u64, mode: Mode) -> Arc<Node> {
        Arc::new(Node {
            id,
            mode: Mutex::new(mode),
            calls: AtomicUsize::new(0),
            request_ids: Mutex::new(Vec::new()),
            grpc_timeouts: Mutex::new(Vec::new()),
            put_values: Mutex::new(Vec::new()),
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn ids(&self) -> Vec<Option<RequestId>> {
        self.request_ids.lock().unwrap().clone()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Records the call; `Err` when the mode says to fail.
    async fn enter<T>(&self, req: &Request<T>, id: Option<RequestId>) -> Result<(), Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.request_ids.lock().unwrap().push(id);
        self.grpc_timeouts.lock().unwrap().push(
            req.metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
        let mode = self.mode.lock().unwrap().clone();
        match mode {
            Mode::Serve => Ok(()),
            Mode::Unavailable { hint } => {
                let mut status = Status::unavailable("no leader");
                if let Some(hint) = hint {
                    status
                        .metadata_mut()
                        .insert(LEADER_HINT_METADATA, hint.parse().unwrap());
                }
                Err(status)
            }
            Mode::FailFirst(k) if n < k => Err(Status::unavailable("electing")),
            Mode::FailFirst(_) => Ok(()),
            Mode::Invalid => Err(Status::invalid_argument("key too large")),
            Mode::NotFound => Err(Status::not_found("member 9 is not a member")),
            Mode::Hang => std::future::pending().await,
        }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision: 7,
            raft_term: 2,
            member_id: self.id,
            serializable: false,
        })
    }
}

#[derive(Clone)]
pub struct Fake(pub Arc<Node>);

#[tonic::async_trait]
impl Kv for Fake {
    async fn range(&self, req: Request<roster_client::proto::RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        self.0.enter(&req, None).await?;
        let key = req.into_inner().key;
        let kvs = if key == b"missing" {
            vec![]
        } else {
            vec![KeyValue {
                key,
                value: b"v".to_vec(),
                create_revision: 1,
                mod_revision: 7,
                version: 3,
                lease: 0,
            }]
        };
        Ok(Response::new(RangeResponse {
            header: self.0.header(),
            count: kvs.len() as u64,
            kvs,
            more: false,
        }))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let id = req.get_ref().request_id;
        self.0.enter(&req, id).await?;
        self.0.put_values.lock().unwrap().push(req.into_inner().value);
        Ok(Response::new(PutResponse {
            header: self.0.header(),
            prev_kv: None,
        }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let id = req.get_ref().request_id;
        self.0.enter(&req, id).await?;
        Ok(Response::new(DeleteResponse {
            header: self.0.header(),
            deleted: 1,
            prev_kvs: vec![],
        }))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let id = req.get_ref().request_id;
        self.0.enter(&req, id).await?;
        Ok(Response::new(TxnResponse {
            header: self.0.header(),
            succeeded: true,
            responses: vec![],
        }))
    }
}

#[tonic::async_trait]
impl Cluster for Fake {
    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        self.0.enter(&req, None).await?;
        Ok(Response::new(StatusResponse {
            cluster_name: "fake".into(),
            leader_id: self.0.id,
            term: 2,
            answered_by: self.0.id,
            members: vec![
                MemberStatus {
                    id: self.0.id,
                    addr: "127.0.0.1:7401".into(),
                    voter: true,
                    reachable: true,
                    state: "leader".into(),
                    term: 2,
                    leader_id: self.0.id,
                    last_log_index: 10,
                    commit_index: 10,
                    applied_index: 10,
                    revision: 7,
                    ..Default::default()
                },
                MemberStatus {
                    id: 9,
                    addr: "127.0.0.1:7409".into(),
                    voter: true,
                    reachable: false,
                    error: "connection refused".into(),
                    ..Default::default()
                },
            ],
        }))
    }

    async fn member_list(&self, req: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        self.0.enter(&req, None).await?;
        Ok(Response::new(MemberListResponse {
            members: vec![Member {
                id: self.0.id,
                addr: String::new(),
                voter: true,
            }],
            leader_id: self.0.id,
        }))
    }

    async fn member_add(&self, req: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        self.0.enter(&req, None).await?;
        Ok(Response::new(MemberAddResponse { members: vec![] }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.0.enter(&req, None).await?;
        Ok(Response::new(MemberPromoteResponse { members: vec![] }))
    }

    async fn member_remove(&self, req: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        self.0.enter(&req, None).await?;
        Ok(Response::new(MemberRemoveResponse { members: vec![] }))
    }
}

/// Serves `node` on a fresh port; returns its `host:port`.
pub async fn serve(node: &Arc<Node>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = Fake(Arc::clone(node));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(fake.clone()))
            .add_service(ClusterServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// An address nothing listens on (connection refused).
pub async fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}
