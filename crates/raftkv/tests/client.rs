//! The client against fake RESP servers: redirects, retries, uncertain outcomes, failover to the
//! next node, pipelining and timeouts. Every test runs under an outer timeout, so a hang fails.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use raftkv::client::{Client, ClientConfig, ClientError};
use raftkv::resp::{Reply, RespCodec};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// What the fake server does with one request.
enum Act {
    Reply(Reply),
    /// Close the connection without answering.
    Close,
    /// Never answer (but keep the connection open).
    Hang,
}

type Handler = Arc<dyn Fn(usize, &[Bytes]) -> Act + Send + Sync>;

/// A RESP server whose answers come from a closure of (request number, words).
struct Fake {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    async fn start(handler: impl Fn(usize, &[Bytes]) -> Act + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, handler.clone(), counter.clone()));
            }
        });
        Fake {
            addr,
            requests,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve(stream: TcpStream, handler: Handler, requests: Arc<AtomicUsize>) {
    let mut conn = Framed::new(stream, RespCodec::default());
    while let Some(Ok(words)) = conn.next().await {
        let n = requests.fetch_add(1, Ordering::SeqCst);
        match handler(n, &words) {
            Act::Reply(reply) => {
                if conn.send(reply).await.is_err() {
                    return;
                }
            }
            Act::Close => return,
            Act::Hang => std::future::pending::<()>().await,
        }
    }
}

fn error(text: &str) -> Act {
    Act::Reply(Reply::Error(text.to_owned()))
}

fn ok() -> Act {
    Act::Reply(Reply::ok())
}

/// A client configuration with short timeouts, so the failure tests are quick.
fn quick() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
        deadline: Duration::from_secs(2),
        max_redirects: 3,
        backoff_min: Duration::from_millis(2),
        backoff_max: Duration::from_millis(20),
    }
}

/// An address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

/// Fails the test instead of hanging.
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("the client call hung")
}

#[tokio::test]
async fn typed_helpers_decode_replies() {
    let server = Fake::start(|_, words| match words[0].to_ascii_uppercase().as_slice() {
        b"GET" if words[1] == "present" => Act::Reply(Reply::bulk("v")),
        b"GET" => Act::Reply(Reply::null()),
        b"SET" => ok(),
        b"DEL" => Act::Reply(Reply::Integer(words.len() as i64 - 1)),
        b"INCR" => Act::Reply(Reply::Integer(7)),
        b"CAS" => Act::Reply(Reply::Integer(1)),
        b"PING" => Act::Reply(Reply::Simple("PONG".into())),
        b"INFO" => Act::Reply(Reply::bulk(
            "# Replication\r\nrole:follower\r\nraft_term:4\r\nraft_leader_id:2\r\n",
        )),
        _ => error("ERR unknown command"),
    })
    .await;
    let mut client = Client::connect(vec![server.addr]).await.expect("connect");
    bounded(async {
        assert_eq!(
            client.get(b"present").await.unwrap(),
            Some(Bytes::from("v"))
        );
        assert_eq!(client.get(b"absent").await.unwrap(), None);
        client.set(b"k", b"v").await.unwrap();
        assert_eq!(client.del(&[b"a", b"b"]).await.unwrap(), 2);
        assert_eq!(client.incr(b"n").await.unwrap(), 7);
        assert!(client.cas(b"k", b"v", b"w").await.unwrap());
        client.ping().await.unwrap();
        let info = client.info().await.unwrap();
        assert_eq!(
            (info.role.as_str(), info.term, info.leader_id),
            ("follower", 4, Some(2))
        );
        match client.cmd(&[b"NOPE"]).await {
            Err(ClientError::Server(text)) => assert_eq!(text, "ERR unknown command"),
            other => panic!("expected a server error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn moved_is_followed_to_the_leader() {
    let leader = Fake::start(|_, _| ok()).await;
    let moved = format!("MOVED 0 {}", leader.addr);
    let follower = Fake::start(move |_, _| error(&moved)).await;
    let mut client = Client::new(vec![follower.addr], quick()).unwrap();
    bounded(client.set(b"k", b"v"))
        .await
        .expect("set via redirect");
    assert_eq!(client.target(), leader.addr);
    assert_eq!((follower.requests(), leader.requests()), (1, 1));
    // The client stays with the leader.
    bounded(client.set(b"k", b"w")).await.expect("second set");
    assert_eq!((follower.requests(), leader.requests()), (1, 2));
}

#[tokio::test]
async fn redirect_loops_are_cut_off() {
    // Two nodes that each point at the other.
    let other: Arc<OnceLock<SocketAddr>> = Arc::new(OnceLock::new());
    let pointer = other.clone();
    let a = Fake::start(move |_, _| error(&format!("MOVED 0 {}", pointer.get().unwrap()))).await;
    let a_addr = a.addr;
    let b = Fake::start(move |_, _| error(&format!("MOVED 0 {a_addr}"))).await;
    other.set(b.addr).unwrap();
    let mut client = Client::new(vec![a.addr], quick()).unwrap();
    match bounded(client.set(b"k", b"v")).await {
        Err(ClientError::TooManyRedirects { hops, .. }) => assert_eq!(hops, 4),
        other => panic!("expected too many redirects, got {other:?}"),
    }
    assert_eq!(a.requests() + b.requests(), 4);
}

#[tokio::test]
async fn a_malformed_redirect_is_an_error() {
    let server = Fake::start(|_, _| error("MOVED 0")).await;
    let mut client = Client::new(vec![server.addr], quick()).unwrap();
    assert!(matches!(
        bounded(client.set(b"k", b"v")).await,
        Err(ClientError::BadRedirect(_))
    ));
}

#[tokio::test]
async fn tryagain_is_retried_until_a_leader_answers() {
    let server = Fake::start(|n, _| {
        if n < 3 {
            error("TRYAGAIN no leader")
        } else {
            ok()
        }
    })
    .await;
    let mut client = Client::new(vec![server.addr], quick()).unwrap();
    bounded(client.set(b"k", b"v"))
        .await
        .expect("set after retries");
    assert_eq!(server.requests(), 4);
}

#[tokio::test]
async fn tryagain_gives_up_at_the_deadline() {
    let server = Fake::start(|_, _| error("TRYAGAIN no leader")).await;
    let config = ClientConfig {
        deadline: Duration::from_millis(300),
        ..quick()
    };
    let mut client = Client::new(vec![server.addr], config).unwrap();
    let started = std::time::Instant::now();
    match bounded(client.set(b"k", b"v")).await {
        Err(ClientError::Unavailable { last, attempts, .. }) => {
            assert!(last.contains("TRYAGAIN"), "{last}");
            assert!(attempts > 1);
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_node_that_keeps_saying_tryagain_is_left_for_the_next() {
    let isolated = Fake::start(|_, _| error("TRYAGAIN no leader")).await;
    let healthy = Fake::start(|_, _| ok()).await;
    let mut client = Client::new(vec![isolated.addr, healthy.addr], quick()).unwrap();
    bounded(client.set(b"k", b"v"))
        .await
        .expect("set on the healthy node");
    assert_eq!((isolated.requests(), healthy.requests()), (3, 1));
    assert_eq!(client.target(), healthy.addr);
}

#[tokio::test]
async fn uncertain_writes_are_surfaced_not_retried() {
    let server = Fake::start(|_, words| {
        if words[0].eq_ignore_ascii_case(b"GET") && words.len() == 2 && words[1] == "later" {
            return Act::Reply(Reply::bulk("x"));
        }
        error("UNCERTAIN leadership changed; outcome unknown")
    })
    .await;
    let mut client = Client::new(vec![server.addr], quick()).unwrap();
    let result = bounded(client.set(b"k", b"v")).await;
    match &result {
        Err(error @ ClientError::Uncertain(text)) => {
            assert!(error.is_uncertain());
            assert!(text.starts_with("UNCERTAIN"), "{text}");
        }
        other => panic!("expected uncertain, got {other:?}"),
    }
    assert_eq!(
        server.requests(),
        1,
        "a non-idempotent write must not be resent"
    );
    assert!(bounded(client.incr(b"n")).await.unwrap_err().is_uncertain());
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn uncertain_reads_are_retried() {
    let server = Fake::start(|n, _| {
        if n == 0 {
            error("UNCERTAIN read lost its leader")
        } else {
            Act::Reply(Reply::bulk("v"))
        }
    })
    .await;
    let mut client = Client::new(vec![server.addr], quick()).unwrap();
    assert_eq!(
        bounded(client.get(b"k")).await.unwrap(),
        Some(Bytes::from("v"))
    );
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn a_node_that_refuses_connections_is_skipped() {
    let dead = dead_addr().await;
    let live = Fake::start(|_, _| ok()).await;
    let mut client = Client::connect_with(vec![dead, live.addr], quick())
        .await
        .expect("connects to the live node");
    assert_eq!(client.target(), live.addr);
    bounded(client.set(b"k", b"v")).await.expect("set");
    // A client created lazily finds the live node on its first command.
    let mut lazy = Client::new(vec![dead, live.addr], quick()).unwrap();
    bounded(lazy.set(b"k", b"v")).await.expect("set");
    assert_eq!(live.requests(), 2);
}

#[tokio::test]
async fn no_reachable_node_is_unavailable_at_the_deadline() {
    let config = ClientConfig {
        deadline: Duration::from_millis(200),
        ..quick()
    };
    let mut client = Client::new(vec![dead_addr().await, dead_addr().await], config).unwrap();
    match bounded(client.get(b"k")).await {
        Err(ClientError::Unavailable { last, .. }) => {
            assert!(last.contains("connecting"), "{last}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(matches!(
        Client::new(vec![], quick()),
        Err(ClientError::NoNodes)
    ));
}

#[tokio::test]
async fn a_connection_lost_after_a_write_is_uncertain_but_a_read_moves_on() {
    // The first node drops every connection on receipt; the second answers.
    let flaky = Fake::start(|_, _| Act::Close).await;
    let good = Fake::start(|_, words| {
        if words[0].eq_ignore_ascii_case(b"GET") {
            Act::Reply(Reply::bulk("v"))
        } else {
            ok()
        }
    })
    .await;
    let mut client = Client::new(vec![flaky.addr, good.addr], quick()).unwrap();
    match bounded(client.set(b"k", b"v")).await {
        Err(ClientError::Uncertain(text)) => assert!(text.contains("closed"), "{text}"),
        other => panic!("expected uncertain, got {other:?}"),
    }
    assert_eq!((flaky.requests(), good.requests()), (1, 0));
    // The client moved on to the next node; a read that hits the flaky node is simply resent.
    let mut reader = Client::new(vec![flaky.addr, good.addr], quick()).unwrap();
    assert_eq!(
        bounded(reader.get(b"k")).await.unwrap(),
        Some(Bytes::from("v"))
    );
    assert_eq!((flaky.requests(), good.requests()), (2, 1));
}

#[tokio::test]
async fn a_silent_server_times_out_instead_of_hanging() {
    let silent = Fake::start(|_, _| Act::Hang).await;
    let config = ClientConfig {
        request_timeout: Duration::from_millis(100),
        deadline: Duration::from_millis(400),
        ..quick()
    };
    let mut client = Client::new(vec![silent.addr], config).unwrap();
    let started = std::time::Instant::now();
    match bounded(client.set(b"k", b"v")).await {
        Err(ClientError::Uncertain(text)) => assert!(text.contains("no reply"), "{text}"),
        other => panic!("expected uncertain, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_millis(350));
    match bounded(client.get(b"k")).await {
        Err(ClientError::Unavailable { .. }) => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn pipelined_requests_are_all_sent_before_replies_and_answered_in_order() {
    const N: usize = 100;
    // A server that answers nothing until it holds all N requests: a client that waited for
    // each reply before sending the next would time out.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = Framed::new(stream, RespCodec::default());
        let mut held = Vec::new();
        while held.len() < N {
            held.push(conn.next().await.unwrap().unwrap());
        }
        for words in held {
            conn.feed(Reply::bulk(words[1].clone())).await.unwrap();
        }
        SinkExt::<Reply>::flush(&mut conn).await.unwrap();
        // Keep the connection until the client is done.
        let _ = conn.next().await;
    });
    let mut client = Client::new(vec![addr], quick()).unwrap();
    let requests: Vec<Vec<Bytes>> = (0..N)
        .map(|i| vec![Bytes::from("GET"), Bytes::from(format!("key{i}"))])
        .collect();
    let replies = bounded(client.pipeline(&requests)).await;
    assert_eq!(replies.len(), N);
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.unwrap(), Reply::bulk(format!("key{i}")));
    }
    drop(client);
    bounded(server).await.unwrap();
}

#[tokio::test]
async fn pipelines_follow_moved_and_retry_tryagain_per_request() {
    let leader = Fake::start(|n, words| {
        // Refuse the second request it sees once, as during an election.
        if n == 1 {
            return error("TRYAGAIN no leader");
        }
        Act::Reply(Reply::bulk(words[1].clone()))
    })
    .await;
    let moved = format!("MOVED 0 {}", leader.addr);
    let follower = Fake::start(move |n, words| {
        // The follower answers reads itself but redirects writes.
        if n % 2 == 0 && words[0].eq_ignore_ascii_case(b"GET") {
            Act::Reply(Reply::bulk(words[1].clone()))
        } else {
            error(&moved)
        }
    })
    .await;
    let mut client = Client::new(vec![follower.addr], quick()).unwrap();
    let requests: Vec<[&[u8]; 2]> = vec![
        [b"GET", b"a"],
        [b"GET", b"b"],
        [b"GET", b"c"],
        [b"GET", b"d"],
        [b"GET", b"e"],
    ];
    let replies = bounded(client.pipeline(&requests)).await;
    let values: Vec<Reply> = replies.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        values,
        ["a", "b", "c", "d", "e"].map(Reply::bulk).to_vec(),
        "every request answered, in order"
    );
    assert_eq!(follower.requests(), 5);
    // b and d were redirected; one of them was refused once more.
    assert_eq!(leader.requests(), 3);
}

#[tokio::test]
async fn a_pipeline_that_loses_its_connection_reports_writes_uncertain() {
    // Answers the first request, then drops the connection.
    let server = Fake::start(|n, _| if n == 0 { ok() } else { Act::Close }).await;
    let config = ClientConfig {
        deadline: Duration::from_millis(300),
        ..quick()
    };
    let mut client = Client::new(vec![server.addr], config).unwrap();
    let requests: Vec<[&[u8]; 3]> = vec![
        [b"SET", b"a", b"1"],
        [b"SET", b"b", b"2"],
        [b"SET", b"c", b"3"],
    ];
    let replies = bounded(client.pipeline(&requests)).await;
    assert_eq!(replies[0].as_ref().unwrap(), &Reply::ok());
    assert!(replies[1].as_ref().unwrap_err().is_uncertain());
    assert!(replies[2].as_ref().unwrap_err().is_uncertain());
}
