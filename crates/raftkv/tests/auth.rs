//! Authentication and authorization on a running node: RESP users with roles and key patterns,
//! failed AUTHs counted, slowed down and cut off, and the admin port's bearer token (also
//! through `raftkv cluster`).

#[path = "server/cluster.rs"]
mod cluster;

use cluster::{bulk, simple, Conn, TestCluster, WAIT};
use raftkv::admin_client::{self, ClusterRequest};
use raftkv::auth::{hash_password, AdminTokenHash, Role, UserSpec, Users};
use raftkv::cluster_cli::{self, ClusterArgs, ClusterCommand};
use raftkv::resp::Reply;
use raftkv::server::ServerLimits;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "test-admin-token-0123456789";

fn users() -> Users {
    let user = |name: &str, password: &str, role, keys: &[&str]| UserSpec {
        name: name.into(),
        password_hash: hash_password(password.as_bytes()).unwrap(),
        role,
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
    };
    Users::from_specs(&[
        user("alice", "alice-pw", Role::ReadWrite, &["app:*"]),
        user("reader", "reader-pw", Role::ReadOnly, &["app:*", "cfg:*"]),
        user("root", "root-pw", Role::Admin, &[]),
        user("default", "default-pw", Role::ReadOnly, &["pub:*"]),
    ])
    .unwrap()
}

async fn secured(limits: ServerLimits, open_reads: bool) -> (TestCluster, u64) {
    let users = users();
    let cluster = TestCluster::start(1, limits, move |config| {
        config.users = users.clone();
        config.admin_token = Some(AdminTokenHash::of(TOKEN));
        config.admin_open_reads = open_reads;
    })
    .await;
    let leader = cluster.leader().await;
    (cluster, leader)
}

fn error(text: &str) -> Reply {
    Reply::Error(text.to_owned())
}

fn is_noperm(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with("NOPERM"))
}

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_must_authenticate_and_stay_within_their_role_and_keys() {
    let (cluster, leader) = secured(ServerLimits::default(), true).await;
    let addr = cluster.client_addr(leader);
    let stats = cluster.servers[&leader].stats();

    // Before AUTH: nothing but AUTH, HELLO ... AUTH and QUIT.
    let mut c = Conn::connect(addr).await;
    for request in [
        &["GET", "app:1"][..],
        &["SET", "app:1", "v"],
        &["PING"],
        &["INFO"],
        &["HELLO"],
    ] {
        assert_eq!(c.cmd(request).await, error(NOAUTH), "{request:?}");
    }
    assert_eq!(c.cmd(&["AUTH", "alice", "wrong"]).await, error(WRONGPASS));
    assert_eq!(
        c.cmd(&["AUTH", "nobody", "alice-pw"]).await,
        error(WRONGPASS)
    );
    assert_eq!(stats.auth_failures.load(Ordering::Relaxed), 2);
    assert_eq!(c.cmd(&["GET", "app:1"]).await, error(NOAUTH));

    // A read-write user within its keys.
    assert_eq!(c.cmd(&["AUTH", "alice", "alice-pw"]).await, simple("OK"));
    assert_eq!(c.cmd_retrying(&["SET", "app:1", "v1"]).await, simple("OK"));
    assert_eq!(c.cmd(&["GET", "app:1"]).await, bulk("v1"));
    assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
    assert!(is_noperm(&c.cmd(&["SET", "cfg:1", "x"]).await));
    assert!(is_noperm(&c.cmd(&["GET", "cfg:1"]).await));
    assert!(
        is_noperm(&c.cmd(&["MGET", "app:1", "cfg:1"]).await),
        "every key is checked"
    );
    assert!(is_noperm(&c.cmd(&["DEL", "app:1", "secret"]).await));
    assert!(is_noperm(&c.cmd(&["INFO"]).await));
    assert!(is_noperm(&c.cmd(&["DBSIZE"]).await));

    // A read-only user reads its keys and writes nothing.
    let mut r = Conn::connect(addr).await;
    assert_eq!(r.cmd(&["AUTH", "reader", "reader-pw"]).await, simple("OK"));
    assert_eq!(r.cmd(&["GET", "app:1"]).await, bulk("v1"));
    assert_eq!(
        r.cmd(&["EXISTS", "app:1", "cfg:9"]).await,
        Reply::Integer(1)
    );
    assert!(is_noperm(&r.cmd(&["SET", "app:1", "x"]).await));
    assert!(is_noperm(&r.cmd(&["INCR", "app:n"]).await));
    assert!(is_noperm(&r.cmd(&["GET", "other"]).await));
    assert_eq!(
        r.cmd(&["GET", "app:1"]).await,
        bulk("v1"),
        "nothing was written"
    );

    // The admin may do anything; AUTH with one argument is the `default` user.
    let mut a = Conn::connect(addr).await;
    assert_eq!(a.cmd(&["AUTH", "root-pw"]).await, error(WRONGPASS));
    assert_eq!(a.cmd(&["AUTH", "root", "root-pw"]).await, simple("OK"));
    assert_eq!(a.cmd_retrying(&["SET", "other", "x"]).await, simple("OK"));
    assert!(matches!(a.cmd(&["INFO"]).await, Reply::Bulk(Some(_))));
    assert_eq!(a.cmd(&["DBSIZE"]).await, Reply::Integer(2));
    let mut d = Conn::connect(addr).await;
    assert_eq!(d.cmd(&["AUTH", "default-pw"]).await, simple("OK"));
    assert!(is_noperm(&d.cmd(&["GET", "app:1"]).await));

    // A pipeline that logs in and then writes: the write is judged as the logged-in user.
    let mut p = TcpStream::connect(addr).await.unwrap();
    p.write_all(b"AUTH alice alice-pw\r\nSET app:2 v2\r\nSET cfg:2 v2\r\nQUIT\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, p.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let got = String::from_utf8(got).unwrap();
    assert!(
        got.starts_with("+OK\r\n+OK\r\n-NOPERM") && got.ends_with("+OK\r\n"),
        "{got}"
    );

    // HELLO 2 AUTH logs in too.
    let mut h = Conn::connect(addr).await;
    let hello = h.cmd(&["HELLO", "2", "AUTH", "reader", "reader-pw"]).await;
    assert!(matches!(hello, Reply::Array(Some(ref fields)) if fields[0] == bulk("server")));
    assert_eq!(h.cmd(&["GET", "app:2"]).await, bulk("v2"));
    assert!(cluster.servers[&leader]
        .render_metrics()
        .contains("raftkv_auth_failures_total 3"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_are_slowed_down_counted_and_cut_off() {
    let limits = ServerLimits {
        auth_failure_delay: Duration::from_millis(40),
        ..ServerLimits::default()
    };
    let (cluster, leader) = secured(limits, true).await;
    let addr = cluster.client_addr(leader);
    let stats = cluster.servers[&leader].stats();
    let mut c = Conn::connect(addr).await;
    let mut took = Vec::new();
    for _ in 0..9 {
        let started = Instant::now();
        assert_eq!(c.cmd(&["AUTH", "alice", "guess"]).await, error(WRONGPASS));
        took.push(started.elapsed());
    }
    // From the 4th on, each waits 40 ms doubled per failure: 40, 80, 160, 320, 640, 1280 ms.
    for (i, expected_ms) in [(3, 40), (4, 80), (5, 160), (8, 1280)] {
        assert!(
            took[i] >= Duration::from_millis(expected_ms),
            "failure {} took {:?}",
            i + 1,
            took[i]
        );
    }
    // The 10th failure is answered and the connection closed.
    c.send(&["AUTH", "alice", "guess"]).await;
    assert_eq!(c.until_closed().await, vec![error(WRONGPASS)]);
    assert_eq!(stats.auth_failures.load(Ordering::Relaxed), 10);
    // Another connection starts afresh, and the right password works.
    let mut fresh = Conn::connect(addr).await;
    assert_eq!(
        fresh.cmd(&["AUTH", "alice", "alice-pw"]).await,
        simple("OK")
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_users_auth_is_refused_and_everything_is_open() {
    let cluster = TestCluster::start(1, ServerLimits::default(), |_| {}).await;
    let leader = cluster.leader().await;
    let mut c = Conn::connect(cluster.client_addr(leader)).await;
    let refused = c.cmd(&["AUTH", "pw"]).await;
    assert!(
        matches!(&refused, Reply::Error(e) if e.contains("without any password configured")),
        "{refused:?}"
    );
    assert_eq!(c.cmd_retrying(&["SET", "k", "v"]).await, simple("OK"));
    assert!(!cluster.servers[&leader].config().auth_configured());
    cluster.shutdown().await;
}

/// An HTTP/1.0 request with optional bearer token: the status and the head.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("{method} {path} HTTP/1.0\r\nHost: x\r\n{authorization}Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_changes_need_the_admin_token() {
    let (cluster, leader) = secured(ServerLimits::default(), true).await;
    let admin = cluster.admin_addr(leader);
    let server = &cluster.servers[&leader];
    assert!(server.config().auth_configured());
    for (method, path) in [
        ("POST", "/cluster/learners?id=9&addr=127.0.0.1:1"),
        ("POST", "/cluster/voters?id=9&addr=127.0.0.1:1"),
        ("POST", "/cluster/remove?id=1"),
        ("POST", "/cluster/transfer-leader?id=1"),
        ("POST", "/snapshot"),
    ] {
        for token in [None, Some("wrong-token")] {
            let (status, head) = http(admin, method, path, token).await;
            assert_eq!(status, 401, "{path} {token:?}: {head}");
            assert!(head.contains("www-authenticate: Bearer"), "{head}");
        }
    }
    assert_eq!(
        server.stats().admin_unauthorized.load(Ordering::Relaxed),
        10
    );
    // Nothing changed.
    let status = server.handle().status();
    assert_eq!(status.membership.learners.len(), 0);
    assert_eq!(status.membership.voters.len(), 1);
    // Reads stay open by default; the token opens the changes.
    assert_eq!(http(admin, "GET", "/status", None).await.0, 200);
    assert_eq!(http(admin, "GET", "/metrics", None).await.0, 200);
    assert_eq!(http(admin, "POST", "/snapshot", Some(TOKEN)).await.0, 200);

    // The client library and the CLI send the token.
    let addr = admin.to_string();
    let refused =
        admin_client::send::<serde_json::Value>(&addr, &ClusterRequest::Snapshot, WAIT).await;
    assert!(
        matches!(
            &refused,
            Err(admin_client::AdminClientError::Refused { status: 401, .. })
        ),
        "{refused:?}"
    );
    let args = |token: Option<&str>| ClusterArgs {
        admins: vec![addr.clone()],
        timeout: 20.0,
        json: false,
        token: token.map(str::to_owned),
        tls: Default::default(),
        command: ClusterCommand::Snapshot,
    };
    assert!(cluster_cli::run(&args(None)).await.is_err());
    let done = cluster_cli::run(&args(Some(TOKEN)))
        .await
        .expect("snapshot with the token");
    assert!(done.contains("snapshot taken"), "{done}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_reads_need_the_token_too() {
    let (cluster, leader) = secured(ServerLimits::default(), false).await;
    let admin = cluster.admin_addr(leader);
    for path in ["/status", "/metrics", "/cluster"] {
        assert_eq!(http(admin, "GET", path, None).await.0, 401, "{path}");
        assert_eq!(http(admin, "GET", path, Some(TOKEN)).await.0, 200, "{path}");
    }
    let access = admin_client::AdminAccess {
        token: Some(TOKEN.to_owned()),
        ..Default::default()
    };
    let view = admin_client::send_with::<serde_json::Value>(
        &admin.to_string(),
        &ClusterRequest::Show,
        WAIT,
        &access,
    )
    .await
    .unwrap();
    assert_eq!(view["voters"], serde_json::json!([1]));
    cluster.shutdown().await;
}
