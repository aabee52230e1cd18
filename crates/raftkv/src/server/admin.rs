//! The admin HTTP port: `GET /status` (JSON) and `GET /metrics` (Prometheus text format 0.0.4).
//!
//! HTTP/1.1 through hyper, one task per connection. hyper answers or closes malformed requests by
//! itself; a client that is slow to send its headers is cut off after
//! [`ServerLimits::admin_header_timeout`](super::ServerLimits), and at most
//! `max_admin_connections` are open at once (more are closed at once).

use super::Shared;
use crate::config::NodeAddrs;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use raftnet::runtime::NodeStatus;
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
                return;
            };
            let shared = shared.clone();
            let cancel = conn_cancel.clone();
            tokio::spawn(async move {
                let service = {
                    let shared = shared.clone();
                    service_fn(move |request: Request<Incoming>| {
                        let response = respond(&shared, &request);
                        async move { Ok::<_, Infallible>(response) }
                    })
                };
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
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

fn respond(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let known = matches!(path, "/status" | "/metrics");
    if !known {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/status" => {
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
            match serde_json::to_vec_pretty(&body) {
                Ok(mut json) => {
                    json.push(b'\n');
                    with_type(StatusCode::OK, json, "application/json")
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot encode the status: {e}\n"),
                ),
            }
        }
        _ => with_type(
            StatusCode::OK,
            shared.render_metrics().into_bytes(),
            METRICS_CONTENT_TYPE,
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
