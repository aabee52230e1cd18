//! A secured cluster in one process: mutual TLS between the nodes, TLS and users on the client
//! port, TLS and a token (or a client certificate) on the admin port. Clients without TLS, with
//! a certificate from another CA, or without credentials get nothing; certificates rotate
//! under load without a restart.

#[path = "server/cluster.rs"]
mod cluster;

use cluster::{TestCluster, WAIT};
use raftkv::admin_client::{self, AdminAccess, AdminClientError, ClusterRequest, SnapshotView};
use raftkv::auth::{hash_password, AdminTokenHash, Role, UserSpec, Users};
use raftkv::certs::{self, CertsInitArgs};
use raftkv::client::{Client, ClientConfig, ClientError, Credentials, Security, TlsArgs};
use raftkv::config::{ClientCertificates, TlsSettings};
use raftkv::server::ServerLimits;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "security-test-token-0123456789";

/// `raftkv certs init DIR --nodes 1,2,3`.
fn issue(dir: &Path) {
    certs::init(&CertsInitArgs {
        dir: dir.to_path_buf(),
        nodes: vec![1, 2, 3],
        hosts: vec![],
        force: true,
    })
    .expect("certificates");
}

fn users() -> Users {
    Users::from_specs(&[UserSpec {
        name: "app".into(),
        password_hash: hash_password(b"app-pw").unwrap(),
        role: Role::ReadWrite,
        keys: vec!["*".into()],
    }])
    .unwrap()
}

/// A 3-node cluster with everything on, its certificates in `certs`.
async fn secure_cluster(certs: &Path) -> TestCluster {
    issue(certs);
    let (users, certs) = (users(), certs.to_path_buf());
    TestCluster::start(3, ServerLimits::default(), move |config| {
        let (cert, key) = certs::node_files(&certs, config.id);
        config.tls = Some(TlsSettings {
            files: raftnet::tls::TlsFiles {
                ca: certs.join("ca.pem"),
                cert,
                key,
            },
            peer: true,
            client: true,
            admin: true,
            client_certificates: ClientCertificates::Optional,
        });
        config.users = users.clone();
        config.admin_token = Some(AdminTokenHash::of(TOKEN));
    })
    .await
}

fn tls_args(certs: &Path, with_client_certificate: bool) -> TlsArgs {
    TlsArgs {
        tls_ca: Some(certs.join("ca.pem")),
        tls_cert: with_client_certificate.then(|| certs.join("client.pem")),
        tls_key: with_client_certificate.then(|| certs.join("client-key.pem")),
    }
}

fn security(certs: &Path, password: Option<&str>) -> Security {
    Security {
        tls: tls_args(certs, false).client_config().unwrap(),
        credentials: password.map(|password| Credentials {
            user: Some("app".into()),
            password: password.into(),
        }),
    }
}

fn quick() -> ClientConfig {
    ClientConfig {
        deadline: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

async fn client(addrs: Vec<SocketAddr>, security: Security) -> Client {
    Client::new(addrs, quick()).unwrap().with_security(security)
}

fn all_clients(cluster: &TestCluster) -> Vec<SocketAddr> {
    cluster
        .servers
        .keys()
        .map(|&id| cluster.client_addr(id))
        .collect()
}

/// Writes a plaintext request and reads until the server closes: what a client without TLS
/// gets from a TLS port (nothing it can read as an answer).
async fn plaintext_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_authenticated_tls_clients_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = secure_cluster(dir.path()).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];

    // Over TLS with a password: writes through a follower (forwarded), reads anywhere.
    let mut app = client(
        vec![cluster.client_addr(follower)],
        security(dir.path(), Some("app-pw")),
    )
    .await;
    app.set(b"k", b"v").await.expect("an authenticated write");
    assert_eq!(app.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));

    // Over TLS without credentials: NOAUTH for reads and writes.
    let mut anonymous = client(all_clients(&cluster), security(dir.path(), None)).await;
    for error in [
        anonymous.get(b"k").await.unwrap_err(),
        anonymous.set(b"k", b"x").await.unwrap_err(),
    ] {
        assert!(
            matches!(&error, ClientError::Server(text) if text.starts_with("NOAUTH")),
            "{error}"
        );
    }
    // A wrong password is refused at once, not retried.
    let mut wrong = client(all_clients(&cluster), security(dir.path(), Some("guess"))).await;
    let error = wrong.get(b"k").await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Refused(text) if text.contains("WRONGPASS")),
        "{error}"
    );

    // Without TLS: the handshake fails and nothing is answered.
    let answer = plaintext_exchange(
        cluster.client_addr(leader),
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nz\r\n",
    )
    .await;
    assert!(!answer.starts_with(b"+OK"), "{answer:?}");
    let stats = cluster.servers[&leader].stats();
    assert!(stats.tls_handshake_failures.load(Ordering::Relaxed) >= 1);

    // Trusting another CA: the client refuses the node's certificate.
    let other = tempfile::tempdir().unwrap();
    issue(other.path());
    let mut fooled = client(
        all_clients(&cluster),
        security(other.path(), Some("app-pw")),
    )
    .await;
    let error = fooled.get(b"k").await.unwrap_err();
    assert!(matches!(error, ClientError::Refused(_)), "{error}");

    assert_eq!(app.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_changes_need_the_token_or_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = secure_cluster(dir.path()).await;
    let leader = cluster.leader().await;
    let admin = cluster.admin_addr(leader).to_string();
    let snapshot = |access: AdminAccess| {
        let admin = admin.clone();
        async move {
            admin_client::send_with::<SnapshotView>(
                &admin,
                &ClusterRequest::Snapshot,
                WAIT,
                &access,
            )
            .await
        }
    };
    let tls = tls_args(dir.path(), false).client_config().unwrap();
    let certified = tls_args(dir.path(), true).client_config().unwrap();

    // TLS alone: 401.
    let error = snapshot(AdminAccess {
        tls: tls.clone(),
        token: None,
    })
    .await
    .unwrap_err();
    assert!(
        matches!(error, AdminClientError::Refused { status: 401, .. }),
        "{error}"
    );
    // Plain HTTP to a TLS admin port: no answer.
    let answer = plaintext_exchange(
        cluster.admin_addr(leader),
        b"POST /snapshot HTTP/1.0\r\n\r\n",
    )
    .await;
    assert!(!answer.starts_with(b"HTTP"), "{answer:?}");
    // The token, or a client certificate from the cluster's CA, authorizes.
    snapshot(AdminAccess {
        tls: tls.clone(),
        token: Some(TOKEN.into()),
    })
    .await
    .expect("with the token");
    snapshot(AdminAccess {
        tls: certified,
        token: None,
    })
    .await
    .expect("with a client certificate");
    // A certificate from another CA is refused in the handshake.
    let other = tempfile::tempdir().unwrap();
    issue(other.path());
    let foreign = TlsArgs {
        tls_ca: Some(dir.path().join("ca.pem")),
        ..tls_args(other.path(), true)
    };
    let error = snapshot(AdminAccess {
        tls: foreign.client_config().unwrap(),
        token: None,
    })
    .await
    .unwrap_err();
    assert!(
        !matches!(error, AdminClientError::Refused { status: 200, .. }),
        "{error}"
    );
    cluster.shutdown().await;
}

/// The whole cluster moves to a new CA while a client writes: new files, then each node
/// reloads (what SIGHUP does). Connections opened afterwards use the new certificates: a
/// client trusting only the new CA is served, and every acknowledged write is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = secure_cluster(dir.path()).await;
    cluster.leader().await;
    let old = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("ca.pem"), old.path().join("ca.pem")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (stop, addrs) = (stop.clone(), all_clients(&cluster));
        let security = security(dir.path(), Some("app-pw"));
        async move {
            let mut app = client(addrs, security).await;
            let mut acked = Vec::new();
            for n in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("r{n}");
                if app.set(key.as_bytes(), b"v").await.is_ok() {
                    acked.push(key);
                }
            }
            acked
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    issue(dir.path());
    for server in cluster.servers.values() {
        server.reload_tls().expect("reload");
    }
    // A broken file set is refused and the node keeps serving with what it has.
    let broken = cluster.servers.values().next().unwrap();
    std::fs::write(dir.path().join("node-1-key.pem"), "not a key").unwrap();
    assert!(broken.reload_tls().is_err());

    let mut fresh = client(all_clients(&cluster), security(dir.path(), Some("app-pw"))).await;
    fresh
        .set(b"after", b"rotation")
        .await
        .expect("served with the new CA");
    let mut stale = client(all_clients(&cluster), security(old.path(), Some("app-pw"))).await;
    assert!(matches!(
        stale.get(b"after").await,
        Err(ClientError::Refused(_))
    ));

    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    assert!(acked.len() > 10, "writes went on: {}", acked.len());
    for key in &acked {
        assert_eq!(
            fresh.get(key.as_bytes()).await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
    cluster.shutdown().await;
}
