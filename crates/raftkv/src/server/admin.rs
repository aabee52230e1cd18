//! The admin HTTP port: `GET /status` (JSON), `GET /metrics` (Prometheus text format 0.0.4), and
//! the cluster API (`GET /cluster`, `POST /cluster/learners|voters|remove|transfer-leader`,
//! `POST /snapshot`, `GET /checksum`; documented with its types in [`crate::admin_client`]).
//! Parameters go in the query string; bodies are ignored.
//!
//! Once `admin_token_hash` is configured, the cluster changes (POST) need `Authorization: Bearer
//! <token>`, and so do the reads when `admin_open_reads` is false; a request without it gets
//! 401 with `WWW-Authenticate: Bearer` (counted in `raftkv_admin_unauthorized_total`).
//!
//! HTTP/1.1 through hyper, one task per connection. hyper answers or closes malformed requests by
//! itself; a client that is slow to send its headers is cut off after
//! [`ServerLimits::admin_header_timeout`](super::ServerLimits), and at most
//! `max_admin_connections` are open at once (more are closed at once).

use super::Shared;
use crate::admin_client::{
    ChecksumView, ClusterView, ErrorView, MemberView, SnapshotView, TransferView,
};
use crate::config::NodeAddrs;
use crate::kv::{DigestUnavailable, DIGEST_CHECKPOINT_INTERVAL};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use raftengine::{Membership, MembershipChange, MembershipError, NodeId, TransferError};
use raftnet::runtime::{AdminError, NodeStatus};
use raftnet::tls::ClientAuth;
use raftnet::transport::TransportStats;
use serde::Serialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The Prometheus text exposition format's content type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(shared.limits.max_admin_connections.max(1)));
    let conn_cancel = cancel.clone();
    super::accept_loop(
        listener,
        "admin",
        slots,
        cancel,
        move |stream, peer, permit| {
            let Some(permit) = permit else {
                if let Some(unlogged) = shared.throttles.refused_admin.count(&shared.stats.admin_connections_refused) {
                    tracing::warn!(
                        %peer,
                        "refusing an admin connection: too many open; {unlogged} more refused since the last such line"
                    );
                }
                return;
            };
            let shared = shared.clone();
            let cancel = conn_cancel.clone();
            tokio::spawn(async move {
                let tls = shared.tls.admin.as_deref();
                let Some(stream) = super::accept_tls(stream, peer, tls, "admin", &shared).await
                else {
                    return;
                };
                // Verified against the CA by the handshake: it authorizes like the token.
                let certified = stream.peer_certificate().is_some();
                let service = {
                    let shared = shared.clone();
                    service_fn(move |request: Request<Incoming>| {
                        let shared = shared.clone();
                        let (method, uri) = (request.method().clone(), request.uri().clone());
                        let authorization = request.headers().get(AUTHORIZATION).cloned();
                        let credentials = Credentials {
                            authorization,
                            certified,
                        };
                        async move {
                            let response = respond(&shared, &method, &uri, &credentials).await;
                            Ok::<_, Infallible>(response)
                        }
                    })
                };
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    // A client that sends its request and then shuts its write side (`curl`
                    // does not, but scripts with `nc -N` and probes do) still gets the answer;
                    // without it hyper takes the EOF as the connection's end.
                    .half_close(true)
                    .header_read_timeout(shared.limits.admin_header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    result = connection => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, "admin connection ended: {e}");
                        }
                    }
                }
                drop(permit);
            });
        },
    )
    .await;
}

/// The `/status` document.
#[derive(Serialize)]
struct StatusBody<'a> {
    #[serde(flatten)]
    node: NodeStatus,
    cluster_id: u64,
    raft_addr: SocketAddr,
    client_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    forward: bool,
    members: &'a BTreeMap<u64, NodeAddrs>,
    clients: ClientStats,
    transport: Option<TransportStats>,
}

#[derive(Serialize)]
struct ClientStats {
    connections_open: u64,
    connections_accepted: u64,
    commands: u64,
    protocol_errors: u64,
}

/// What a path accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Status,
    Metrics,
    Cluster,
    AddLearner,
    AddVoter,
    Remove,
    TransferLeader,
    Snapshot,
    Checksum,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        Some(match path {
            "/status" => Route::Status,
            "/metrics" => Route::Metrics,
            "/cluster" => Route::Cluster,
            "/cluster/learners" => Route::AddLearner,
            "/cluster/voters" => Route::AddVoter,
            "/cluster/remove" => Route::Remove,
            "/cluster/transfer-leader" => Route::TransferLeader,
            "/snapshot" => Route::Snapshot,
            "/checksum" => Route::Checksum,
            _ => return None,
        })
    }

    fn reads(self) -> bool {
        matches!(
            self,
            Route::Status | Route::Metrics | Route::Cluster | Route::Checksum
        )
    }
}

/// Whether the request carries the admin token, when the route needs it: cluster changes
/// always (once a token is configured), reads unless `admin_open_reads`.
fn authorized(shared: &Shared, route: Route, credentials: &Credentials) -> bool {
    let checks_certificates = shared
        .tls
        .admin
        .as_ref()
        .is_some_and(|tls| tls.client_auth() != ClientAuth::None);
    if shared.config.admin_token.is_none() && !checks_certificates {
        return true;
    }
    if route.reads() && shared.config.admin_open_reads {
        return true;
    }
    if credentials.certified {
        return true;
    }
    let Some(token_hash) = &shared.config.admin_token else {
        return false;
    };
    let token = credentials
        .authorization
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    token.is_some_and(|token| token_hash.matches(token))
}

fn unauthorized(shared: &Shared) -> Response<Full<Bytes>> {
    if let Some(unlogged) = shared
        .throttles
        .admin_unauthorized
        .count(&shared.stats.admin_unauthorized)
    {
        tracing::warn!(
            "refused an admin request without a valid bearer token; {unlogged} more refused since the last such line"
        );
    }
    let mut response = json(
        StatusCode::UNAUTHORIZED,
        &ErrorView {
            error: "this request needs the admin token: Authorization: Bearer <token>".to_owned(),
            leader: None,
        },
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"raftkv admin\""),
    );
    response
}

/// What a request proves of its sender.
struct Credentials {
    /// The `Authorization` header.
    authorization: Option<HeaderValue>,
    /// The connection presented a client certificate from the cluster's CA.
    certified: bool,
}

async fn respond(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    credentials: &Credentials,
) -> Response<Full<Bytes>> {
    let Some(route) = Route::of(uri.path()) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let allowed = if route.reads() {
        method == Method::GET || method == Method::HEAD
    } else {
        method == Method::POST
    };
    if !allowed {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        let allow = if route.reads() { "GET, HEAD" } else { "POST" };
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        return response;
    }
    if !authorized(shared, route, credentials) {
        return unauthorized(shared);
    }
    match route {
        Route::Status => status(shared),
        Route::Metrics => with_type(
            StatusCode::OK,
            shared.render_metrics().into_bytes(),
            METRICS_CONTENT_TYPE,
        ),
        Route::Cluster => {
            let node = shared.handle.status();
            let view = cluster_view(shared, &node, &node.membership, node.membership_committed);
            json(StatusCode::OK, &view)
        }
        Route::Checksum => match checksum(shared, uri.query()) {
            Ok(response) => response,
            Err(message) => bad_request(message),
        },
        _ => match cluster_request(shared, route, uri.query()).await {
            Ok(response) => response,
            Err(Failure::BadRequest(message)) => bad_request(message),
            Err(Failure::Admin(error)) => admin_error(error),
        },
    }
}

fn status(shared: &Shared) -> Response<Full<Bytes>> {
    let stats = &shared.stats;
    let body = StatusBody {
        node: shared.handle.status(),
        cluster_id: shared.config.cluster_id,
        raft_addr: shared.addrs.raft,
        client_addr: shared.addrs.client,
        admin_addr: shared.addrs.admin,
        forward: shared.config.forward,
        members: &shared.config.nodes,
        clients: ClientStats {
            connections_open: stats.connections_open.load(Ordering::Relaxed),
            connections_accepted: stats.connections_accepted.load(Ordering::Relaxed),
            commands: stats.commands.load(Ordering::Relaxed),
            protocol_errors: stats.protocol_errors.load(Ordering::Relaxed),
        },
        transport: shared.transport_stats(),
    };
    json(StatusCode::OK, &body)
}

/// `GET /checksum[?index=N]`: the store's digest at `N` (at its applied index without one).
fn checksum(shared: &Shared, query: Option<&str>) -> Result<Response<Full<Bytes>>, String> {
    let params = Params::parse(query)?;
    params.only(&["index"])?;
    let index = match params.0.get("index") {
        None => None,
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| format!("index '{text}' is not a log index"))?,
        ),
    };
    let node = shared.handle.status().id;
    let answer = shared.handle.inspect(|store, applied| {
        let applied = applied.max(store.applied_index());
        let index = index.map_or(applied, raftengine::LogIndex);
        let window = store.digest_window();
        store.digest_at(index, applied).map(|digest| ChecksumView {
            node,
            index: index.0,
            digest: digest.to_string(),
            applied_index: applied.0,
            oldest: window.oldest.map(|i| i.0),
            oldest_checkpoint: window.oldest_checkpoint.map(|i| i.0),
            checkpoint_interval: DIGEST_CHECKPOINT_INTERVAL,
        })
    });
    let status = match &answer {
        Ok(Ok(view)) => return Ok(json(StatusCode::OK, view)),
        Ok(Err(DigestUnavailable::NotApplied { .. })) => StatusCode::CONFLICT,
        Ok(Err(DigestUnavailable::Forgotten { .. })) => StatusCode::GONE,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let error = match answer {
        Ok(Err(unavailable)) => unavailable.to_string(),
        Err(stopped) => stopped.to_string(),
        Ok(Ok(_)) => String::new(),
    };
    Ok(json(
        status,
        &ErrorView {
            error,
            leader: None,
        },
    ))
}

/// Why a change, transfer or snapshot request got no success.
enum Failure {
    BadRequest(String),
    Admin(AdminError),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::BadRequest(message)
    }
}

impl From<AdminError> for Failure {
    fn from(error: AdminError) -> Failure {
        Failure::Admin(error)
    }
}

/// A change, transfer or snapshot.
async fn cluster_request(
    shared: &Shared,
    route: Route,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, Failure> {
    let params = Params::parse(query)?;
    let handle = &shared.handle;
    let change = match route {
        Route::AddLearner => {
            params.only(&["id", "addr"])?;
            MembershipChange::AddLearner {
                node: params.node_id()?,
                address: params.raft_address()?.ok_or_else(|| {
                    "addr=HOST:PORT (the new node's raft address) is required".to_owned()
                })?,
            }
        }
        Route::AddVoter => {
            params.only(&["id", "addr"])?;
            let node = params.node_id()?;
            let known = handle.status().membership.addresses.get(&node).cloned();
            let address = params.raft_address()?.or(known).ok_or_else(|| {
                format!(
                    "addr=HOST:PORT is required: node {} has no known raft address",
                    node.0
                )
            })?;
            MembershipChange::AddVoter { node, address }
        }
        Route::Remove => {
            params.only(&["id"])?;
            MembershipChange::Remove {
                node: params.node_id()?,
            }
        }
        Route::TransferLeader => {
            params.only(&["id"])?;
            let leader = handle.transfer_leadership(params.node_id()?).await?;
            return Ok(json(StatusCode::OK, &TransferView { leader: leader.0 }));
        }
        Route::Snapshot => {
            params.only(&[])?;
            let index = handle.trigger_snapshot().await?;
            return Ok(json(StatusCode::OK, &SnapshotView { index: index.0 }));
        }
        Route::Status | Route::Metrics | Route::Cluster | Route::Checksum => {
            return Ok(text(StatusCode::NOT_FOUND, "not found\n"));
        }
    };
    let committed = handle.change_membership(change).await?;
    let node = handle.status();
    Ok(json(
        StatusCode::OK,
        &cluster_view(shared, &node, &committed, true),
    ))
}

/// A query string's parameters, percent-decoded.
struct Params(BTreeMap<String, String>);

impl Params {
    fn parse(query: Option<&str>) -> Result<Params, String> {
        let mut params = BTreeMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (key, value) = (decode(key)?, decode(value)?);
            if params.insert(key.clone(), value).is_some() {
                return Err(format!("parameter '{key}' given twice"));
            }
        }
        Ok(Params(params))
    }

    /// Refuses parameters other than `known` (a typo should not be silently ignored).
    fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(key) if known.is_empty() => Err(format!("unknown parameter '{key}' (none taken)")),
            Some(key) => Err(format!(
                "unknown parameter '{key}' (expected {})",
                known.join(", ")
            )),
        }
    }

    fn node_id(&self) -> Result<NodeId, String> {
        let text = self
            .0
            .get("id")
            .ok_or_else(|| "id=N (the node id) is required".to_owned())?;
        match text.parse::<u64>() {
            Ok(id) if id > 0 => Ok(NodeId(id)),
            _ => Err(format!("id '{text}' is not a node id (a number from 1)")),
        }
    }

    /// `addr` if given, checked to be `host:port` with a port other than 0.
    fn raft_address(&self) -> Result<Option<String>, String> {
        let Some(text) = self.0.get("addr") else {
            return Ok(None);
        };
        let bad = |why: &str| format!("addr '{text}': {why}");
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST:PORT"))?;
        match port.parse::<u16>() {
            Ok(port) if port > 0 && !host.is_empty() => Ok(Some(text.clone())),
            _ => Err(bad("expected HOST:PORT with a port from 1 to 65535")),
        }
    }
}

/// Percent-decodes one query component (`+` is a space, as forms send it).
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in '{text}'"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{text}' is not UTF-8"))
}

/// The configuration `membership` as `node` sees it, with addresses from the configuration and,
/// for members it does not name, from this server's own config.
fn cluster_view(
    shared: &Shared,
    node: &NodeStatus,
    membership: &Membership,
    committed: bool,
) -> ClusterView {
    let ids = |set: &std::collections::BTreeSet<NodeId>| set.iter().map(|n| n.0).collect();
    let members = membership
        .members()
        .into_iter()
        .map(|id| {
            let kind = if membership.voters.contains(&id) {
                "voter"
            } else if membership.outgoing.contains(&id) {
                "leaving"
            } else {
                "learner"
            };
            let configured = shared.config.nodes.get(&id.0);
            MemberView {
                id: id.0,
                kind: kind.to_owned(),
                raft: membership
                    .addresses
                    .get(&id)
                    .cloned()
                    .or_else(|| configured.map(|n| n.raft.to_string())),
                client: configured.map(|n| n.client.to_string()),
            }
        })
        .collect();
    ClusterView {
        node: node.id,
        role: node.role.clone(),
        term: node.term,
        leader: node.leader,
        committed,
        removed: node.removed,
        voters: ids(&membership.voters),
        outgoing: ids(&membership.outgoing),
        learners: ids(&membership.learners),
        members,
    }
}

/// The HTTP answer for an administrative request that failed.
fn admin_error(error: AdminError) -> Response<Full<Bytes>> {
    let status = match &error {
        AdminError::Membership(MembershipError::Invalid(_))
        | AdminError::Transfer(TransferError::UnknownTarget(_) | TransferError::TargetIsSelf) => {
            StatusCode::BAD_REQUEST
        }
        AdminError::Membership(MembershipError::InProgress)
        | AdminError::Transfer(TransferError::InProgress(_)) => StatusCode::CONFLICT,
        AdminError::Removed => StatusCode::GONE,
        AdminError::NotLeader { .. } | AdminError::Transfer(TransferError::NotLeader) => {
            StatusCode::MISDIRECTED_REQUEST
        }
        AdminError::Membership(MembershipError::Retry | MembershipError::LeadershipLost)
        | AdminError::Stopped(_) => StatusCode::SERVICE_UNAVAILABLE,
        AdminError::Membership(MembershipError::CatchUpFailed { .. })
        | AdminError::TransferFailed { .. }
        | AdminError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        AdminError::Snapshot(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let leader = match &error {
        AdminError::NotLeader { leader } => leader.map(|l| l.0),
        _ => None,
    };
    json(
        status,
        &ErrorView {
            error: error.to_string(),
            leader,
        },
    )
}

fn bad_request(error: String) -> Response<Full<Bytes>> {
    json(
        StatusCode::BAD_REQUEST,
        &ErrorView {
            error,
            leader: None,
        },
    )
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(body) {
        Ok(mut json) => {
            json.push(b'\n');
            with_type(status, json, "application/json")
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(
        status,
        body.as_bytes().to_vec(),
        "text/plain; charset=utf-8",
    )
}

fn with_type(
    status: StatusCode,
    body: Vec<u8>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded_and_checked() {
        let params = Params::parse(Some("id=4&addr=%5B::1%5D:7004")).unwrap();
        assert_eq!(params.0["addr"], "[::1]:7004");
        assert!(params.only(&["id", "addr"]).is_ok());
        assert!(params.only(&["id"]).unwrap_err().contains("'addr'"));
        assert_eq!(params.node_id().unwrap(), NodeId(4));
        assert_eq!(
            params.raft_address().unwrap().as_deref(),
            Some("[::1]:7004")
        );
        assert!(Params::parse(Some("id=1&id=2")).is_err());
        assert!(Params::parse(Some("id=%zz")).is_err());
        assert!(Params::parse(None).unwrap().node_id().is_err());
        for bad in ["id=0", "id=x", "id=-1"] {
            assert!(
                Params::parse(Some(bad)).unwrap().node_id().is_err(),
                "{bad}"
            );
        }
        for bad in ["addr=nohost", "addr=:7000", "addr=h:0", "addr=h:99999"] {
            assert!(
                Params::parse(Some(bad)).unwrap().raft_address().is_err(),
                "{bad}"
            );
        }
    }
}
