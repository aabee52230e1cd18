//! An in-process cluster of `raftkv` servers on 127.0.0.1 (port 0) and a small RESP client, for
//! the server tests.

#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use raftkv::config::{NodeAddrs, ServerConfig};
use raftkv::resp::{Reply, RespClientCodec};
use raftkv::server::{Listeners, Server, ServerLimits};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// Bound on every wait.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestCluster {
    pub servers: BTreeMap<u64, Server>,
    pub dir: TempDir,
}

impl TestCluster {
    /// Starts `n` nodes; `tune` adjusts each node's configuration before it starts.
    pub async fn start(
        n: u64,
        limits: ServerLimits,
        tune: impl Fn(&mut ServerConfig),
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = BTreeMap::new();
        let mut nodes = Vec::new();
        for id in 1..=n {
            let raft = TcpListener::bind("127.0.0.1:0").await.expect("bind raft");
            let client = TcpListener::bind("127.0.0.1:0").await.expect("bind client");
            let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
            nodes.push(NodeAddrs {
                id,
                raft: raft.local_addr().unwrap(),
                client: client.local_addr().unwrap(),
            });
            listeners.insert(
                id,
                Listeners {
                    raft,
                    client,
                    admin: Some(admin),
                },
            );
        }
        let mut servers = BTreeMap::new();
        for (id, listeners) in listeners {
            let mut config =
                ServerConfig::new(id, nodes.clone(), dir.path().join(format!("node-{id}")));
            config.admin = listeners.admin.as_ref().map(|l| l.local_addr().unwrap());
            // A quiet LAN's fast elections (150-300 ms; the default suits lossy networks).
            config.election_ticks = (15, 30);
            tune(&mut config);
            let server = Server::start_with_limits(config, listeners, limits)
                .await
                .expect("server starts");
            servers.insert(id, server);
        }
        TestCluster { servers, dir }
    }

    pub fn client_addr(&self, id: u64) -> SocketAddr {
        self.servers[&id].addrs().client
    }

    pub fn admin_addr(&self, id: u64) -> SocketAddr {
        self.servers[&id].addrs().admin.expect("admin port")
    }

    /// Waits until one node leads and every node knows it; returns its id.
    pub async fn leader(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let statuses: Vec<_> = self.servers.values().map(|s| s.handle().status()).collect();
            let leaders: Vec<u64> = statuses
                .iter()
                .filter(|s| s.role == "leader")
                .map(|s| s.id)
                .collect();
            if let [leader] = leaders[..] {
                if statuses.iter().all(|s| s.leader == Some(leader)) {
                    return leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn followers(&self, leader: u64) -> Vec<u64> {
        self.servers
            .keys()
            .copied()
            .filter(|&id| id != leader)
            .collect()
    }

    pub async fn shutdown(self) {
        for (_, server) in self.servers {
            server.shutdown().await;
        }
    }
}

/// A RESP client connection.
pub struct Conn {
    pub framed: Framed<TcpStream, RespClientCodec>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Conn {
            framed: Framed::new(stream, RespClientCodec::default()),
        }
    }

    /// Sends one request and waits for its reply.
    pub async fn cmd(&mut self, words: &[&str]) -> Reply {
        self.send(words).await;
        self.reply().await
    }

    /// Sends one request, retrying while the cluster has no leader (`-TRYAGAIN`) or the outcome
    /// is unknown (`-UNCERTAIN`): only for idempotent requests.
    pub async fn cmd_retrying(&mut self, words: &[&str]) -> Reply {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let reply = self.cmd(words).await;
            match &reply {
                Reply::Error(text)
                    if (text.starts_with("TRYAGAIN") || text.starts_with("UNCERTAIN"))
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return reply,
            }
        }
    }

    pub async fn send(&mut self, words: &[&str]) {
        self.framed.send(words).await.expect("send a request");
    }

    /// Sends one request of binary words.
    pub async fn send_bytes(&mut self, words: &[&[u8]]) {
        self.framed.send(words).await.expect("send a request");
    }

    pub async fn reply(&mut self) -> Reply {
        tokio::time::timeout(WAIT, self.framed.next())
            .await
            .expect("a reply in time")
            .expect("a reply, not the end of the connection")
            .expect("a well-formed reply")
    }

    /// Writes raw bytes.
    pub async fn raw(&mut self, bytes: &[u8]) {
        self.framed.get_mut().write_all(bytes).await.expect("write");
    }

    /// Waits for the server to close the connection; returns the replies sent before.
    pub async fn until_closed(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, self.framed.next())
                .await
                .expect("the server closes the connection in time")
            {
                Some(Ok(reply)) => replies.push(reply),
                Some(Err(_)) | None => return replies,
            }
        }
    }
}

/// Reads a whole HTTP/1.0 response (the server closes after it).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect admin");
    let request = format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let response = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, head.to_owned(), body.to_owned())
}

pub fn bulk(text: &str) -> Reply {
    Reply::bulk(text.to_owned())
}

pub fn simple(text: &str) -> Reply {
    Reply::Simple(text.to_owned())
}
