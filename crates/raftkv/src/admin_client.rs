//! The cluster part of the admin HTTP API: the requests ([`ClusterRequest`]), the JSON documents
//! the server answers with ([`ClusterView`], [`TransferView`], [`SnapshotView`], [`ErrorView`]),
//! and a small client that sends one request per connection ([`send`]), for `raftkv cluster`,
//! the demo and the tests.
//!
//! | request | method and path | answer |
//! |---|---|---|
//! | show | `GET /cluster` | 200 [`ClusterView`] |
//! | add a learner | `POST /cluster/learners?id=N&addr=HOST:PORT` | 200 [`ClusterView`] (committed) |
//! | add or promote a voter | `POST /cluster/voters?id=N[&addr=HOST:PORT]` | 200 [`ClusterView`] |
//! | remove a member | `POST /cluster/remove?id=N` | 200 [`ClusterView`] |
//! | move leadership | `POST /cluster/transfer-leader?id=N` (at the leader) | 200 [`TransferView`] |
//! | snapshot now | `POST /snapshot` | 200 [`SnapshotView`] |
//! | state digest | `GET /checksum[?index=N]` | 200 [`ChecksumView`] (409 not applied yet, 410 no longer kept) |
//!
//! `addr` is the node's raft address; it may be left out when promoting a learner (its address
//! is known). Membership changes may be sent to any member: a follower forwards them to the
//! leader. Errors are JSON [`ErrorView`]s: 400 bad input or an invalid change, 409 another
//! change or transfer under way, 410 the node was removed, 421 not the leader (for a transfer;
//! `leader` names it), 503 no leader ready or the outcome is unknown (retry after reading
//! `GET /cluster`), 504 the new node did not catch up or the leader did not move in time.

use raftnet::tls::Stream;
use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The configuration as one node sees it (`GET /cluster`, and the answer to a change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The node that answered.
    pub node: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    /// Whether the configuration shown is committed (false while a change is under way).
    pub committed: bool,
    /// The answering node was removed from the cluster.
    pub removed: bool,
    pub voters: Vec<u64>,
    /// During a joint change, the previous voters (decisions need a majority of both sets).
    pub outgoing: Vec<u64>,
    pub learners: Vec<u64>,
    pub members: Vec<MemberView>,
}

/// One member and where it is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: u64,
    /// `voter`, `learner`, or `leaving` (a voter of the previous set during a joint change).
    pub kind: String,
    /// The raft address (from the configuration, else from the answering node's own config).
    pub raft: Option<String>,
    /// The client address, when the answering node's config lists the member.
    pub client: Option<String>,
}

/// The answer to a leadership transfer: who leads now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferView {
    pub leader: u64,
}

/// The answer to `POST /snapshot`: the log index the snapshot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotView {
    pub index: u64,
}

/// The digest of a node's key-value state at one log index (`GET /checksum`): two replicas that
/// applied the same log agree on it at every index (see [`crate::kv`]'s state digest). Without
/// `index`, the node answers at its applied index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecksumView {
    /// The node that answered.
    pub node: u64,
    /// The log index the digest is of.
    pub index: u64,
    /// 32 hex digits.
    pub digest: String,
    /// How far the node has applied the log.
    pub applied_index: u64,
    /// The node answers for every index from this one to `applied_index`.
    pub oldest: Option<u64>,
    /// Further back, it answers only at multiples of `checkpoint_interval`, from this one.
    pub oldest_checkpoint: Option<u64>,
    pub checkpoint_interval: u64,
}

impl ChecksumView {
    /// Whether the node can answer for `index` (by what it said of its history).
    pub fn can_answer(&self, index: u64) -> bool {
        let recent = self.oldest.is_some_and(|oldest| oldest <= index);
        let checkpoint = self.oldest_checkpoint.is_some_and(|oldest| oldest <= index)
            && self.checkpoint_interval > 0
            && index.is_multiple_of(self.checkpoint_interval);
        index <= self.applied_index && (recent || checkpoint)
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    pub error: String,
    /// The leader, when the request must go there (421).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
}

/// One request of the cluster API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterRequest {
    Show,
    AddLearner {
        id: u64,
        raft: String,
    },
    /// Adds a voter, or promotes a learner (whose address is then optional).
    AddVoter {
        id: u64,
        raft: Option<String>,
    },
    Remove {
        id: u64,
    },
    TransferLeader {
        id: u64,
    },
    Snapshot,
    /// The state digest at `index` (the applied index if `None`).
    Checksum {
        index: Option<u64>,
    },
}

impl ClusterRequest {
    /// The HTTP method and the path with its query.
    pub fn target(&self) -> (&'static str, String) {
        match self {
            ClusterRequest::Show => ("GET", "/cluster".to_owned()),
            ClusterRequest::AddLearner { id, raft } => (
                "POST",
                format!("/cluster/learners?id={id}&addr={}", encode(raft)),
            ),
            ClusterRequest::AddVoter { id, raft } => {
                let mut path = format!("/cluster/voters?id={id}");
                if let Some(raft) = raft {
                    let _ = write!(path, "&addr={}", encode(raft));
                }
                ("POST", path)
            }
            ClusterRequest::Remove { id } => ("POST", format!("/cluster/remove?id={id}")),
            ClusterRequest::TransferLeader { id } => {
                ("POST", format!("/cluster/transfer-leader?id={id}"))
            }
            ClusterRequest::Snapshot => ("POST", "/snapshot".to_owned()),
            ClusterRequest::Checksum { index: None } => ("GET", "/checksum".to_owned()),
            ClusterRequest::Checksum { index: Some(index) } => {
                ("GET", format!("/checksum?index={index}"))
            }
        }
    }
}

/// Percent-encodes a query value (everything but unreserved characters and `:`).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Why an admin request got no successful answer.
#[derive(Debug, Clone, Error)]
pub enum AdminClientError {
    #[error("cannot reach the admin port {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("malformed answer from {addr}: {reason}")]
    Malformed { addr: String, reason: String },
    /// The node answered with an error status.
    #[error("{addr} answered {status}: {}", .error.error)]
    Refused {
        addr: String,
        status: u16,
        error: ErrorView,
    },
}

impl AdminClientError {
    /// A 421: the request must go to the leader (`error.leader`, if known).
    pub fn is_not_leader(&self) -> bool {
        matches!(self, AdminClientError::Refused { status: 421, .. })
    }

    /// A 409 or 410 from `GET /checksum`: the node has not applied that index yet, or no
    /// longer keeps its digest; another index may do.
    pub fn is_not_comparable(&self) -> bool {
        matches!(
            self,
            AdminClientError::Refused {
                status: 409 | 410,
                ..
            }
        )
    }

    /// A 503: no leader is ready, the outcome of a change is unknown, or the node stopped; a
    /// membership change may be asked again.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AdminClientError::Refused { status: 503, .. })
    }
}

/// Largest answer read (a cluster view is a few hundred bytes).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// How a tool reaches an admin port: TLS (trusting the cluster's CA, optionally presenting a
/// client certificate, which authorizes cluster changes like the token) and the bearer token.
/// The default is plain HTTP without a token.
#[derive(Clone, Default)]
pub struct AdminAccess {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminAccess {
    /// Never prints the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

/// The name a server's certificate must carry for `addr` (`host:port`): its IP address or
/// its DNS name.
fn server_name(addr: &str) -> Option<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(ServerName::IpAddress(ip.into())),
        Err(_) => ServerName::try_from(host.to_owned()).ok(),
    }
}

/// Sends `request` to the admin port at `addr` and returns the status and body of the answer
/// (any status). `timeout` bounds the whole exchange.
pub async fn raw(
    addr: &str,
    request: &ClusterRequest,
    timeout: Duration,
) -> Result<(u16, String), AdminClientError> {
    raw_with(addr, request, timeout, &AdminAccess::default()).await
}

/// [`raw`] over TLS and with the token, as `access` says.
pub async fn raw_with(
    addr: &str,
    request: &ClusterRequest,
    timeout: Duration,
    access: &AdminAccess,
) -> Result<(u16, String), AdminClientError> {
    let (method, path) = request.target();
    // A token with a line break would end the header early and inject others.
    let authorization = match access.token.as_deref() {
        Some(token) if token.contains(['\r', '\n']) => {
            return Err(AdminClientError::Malformed {
                addr: addr.to_owned(),
                reason: "the admin token contains a line break".into(),
            })
        }
        Some(token) => format!("Authorization: Bearer {token}\r\n"),
        None => String::new(),
    };
    let exchange = async {
        let unreachable = |reason: String| AdminClientError::Unreachable {
            addr: addr.to_owned(),
            reason,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut stream = match &access.tls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                let name = server_name(addr)
                    .ok_or_else(|| unreachable("not a host name or address to verify".into()))?;
                let tls = TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(format!("TLS handshake: {e}")))?;
                Stream::Dialed(Box::new(tls))
            }
        };
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let malformed = |reason: String| AdminClientError::Malformed {
            addr: addr.to_owned(),
            reason,
        };
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| malformed(format!("write: {e}")))?;
        let mut response = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES as u64 + 1)
            .read_to_end(&mut response)
            .await
            .map_err(|e| malformed(format!("read: {e}")))?;
        if response.len() > MAX_RESPONSE_BYTES {
            return Err(malformed(format!("longer than {MAX_RESPONSE_BYTES} bytes")));
        }
        let text = String::from_utf8(response).map_err(|_| malformed("not UTF-8".into()))?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| malformed("no end of headers".into()))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| malformed(format!("bad status line {:?}", head.lines().next())))?;
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| AdminClientError::Timeout {
            addr: addr.to_owned(),
            timeout,
        })?
}

/// Sends `request` and decodes a successful answer as `T` (a [`ClusterView`], [`TransferView`]
/// or [`SnapshotView`], as the table in the module documentation says); an error status becomes
/// [`AdminClientError::Refused`].
pub async fn send<T: for<'de> Deserialize<'de>>(
    addr: &str,
    request: &ClusterRequest,
    timeout: Duration,
) -> Result<T, AdminClientError> {
    send_with(addr, request, timeout, &AdminAccess::default()).await
}

/// [`send`] over TLS and with the token, as `access` says.
pub async fn send_with<T: for<'de> Deserialize<'de>>(
    addr: &str,
    request: &ClusterRequest,
    timeout: Duration,
    access: &AdminAccess,
) -> Result<T, AdminClientError> {
    let (status, body) = raw_with(addr, request, timeout, access).await?;
    let malformed = |reason: String| AdminClientError::Malformed {
        addr: addr.to_owned(),
        reason,
    };
    if status != 200 {
        let error = serde_json::from_str::<ErrorView>(&body).unwrap_or(ErrorView {
            error: body.trim().to_owned(),
            leader: None,
        });
        return Err(AdminClientError::Refused {
            addr: addr.to_owned(),
            status,
            error,
        });
    }
    serde_json::from_str(&body).map_err(|e| malformed(format!("{e}: {body}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_their_target() {
        assert_eq!(ClusterRequest::Show.target(), ("GET", "/cluster".into()));
        assert_eq!(
            ClusterRequest::AddLearner {
                id: 4,
                raft: "[::1]:7004".into()
            }
            .target(),
            ("POST", "/cluster/learners?id=4&addr=%5B::1%5D:7004".into())
        );
        assert_eq!(
            ClusterRequest::AddVoter { id: 4, raft: None }.target(),
            ("POST", "/cluster/voters?id=4".into())
        );
        assert_eq!(
            ClusterRequest::TransferLeader { id: 2 }.target().1,
            "/cluster/transfer-leader?id=2"
        );
    }
}
