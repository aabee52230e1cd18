//! A 3-node raftkv cluster in this process (real TCP on 127.0.0.1, durable logs in a temp dir),
//! spoken to in RESP2: every command, pipelining, writes at followers (forwarded, or `-MOVED`
//! when forwarding is off), and the admin port.

#[path = "server/cluster.rs"]
mod cluster;

use bytes::BytesMut;
use cluster::{bulk, http_get, simple, Conn, TestCluster};
use raftkv::resp::{encode_request, Reply};
use raftkv::server::ServerLimits;

fn int(n: i64) -> Reply {
    Reply::Integer(n)
}

fn error_text(reply: &Reply) -> &str {
    match reply {
        Reply::Error(text) => text,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_serves_every_command_over_resp() {
    let cluster = TestCluster::start(3, ServerLimits::default(), |_| {}).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    let mut c = Conn::connect(cluster.client_addr(leader)).await;

    assert_eq!(c.cmd(&["PING"]).await, simple("PONG"));
    assert_eq!(c.cmd(&["ping", "hello"]).await, bulk("hello"));
    assert_eq!(c.cmd_retrying(&["SET", "k", "v"]).await, simple("OK"));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("v"));
    assert_eq!(c.cmd(&["GET", "missing"]).await, Reply::null());
    assert_eq!(c.cmd(&["EXISTS", "k", "missing", "k"]).await, int(2));
    assert_eq!(c.cmd(&["INCR", "n"]).await, int(1));
    assert_eq!(c.cmd(&["INCRBY", "n", "10"]).await, int(11));
    assert_eq!(c.cmd(&["DECR", "n"]).await, int(10));
    assert_eq!(c.cmd(&["DECRBY", "n", "3"]).await, int(7));
    assert_eq!(
        error_text(&c.cmd(&["INCR", "k"]).await),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        c.cmd(&["MGET", "k", "missing", "n"]).await,
        Reply::array(vec![bulk("v"), Reply::null(), bulk("7")])
    );
    assert_eq!(c.cmd(&["CAS", "k", "v", "w"]).await, int(1));
    assert_eq!(c.cmd(&["CAS", "k", "v", "x"]).await, int(0));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("w"));
    assert_eq!(c.cmd(&["SETNX", "fresh", "1"]).await, int(1));
    assert_eq!(c.cmd(&["SETNX", "fresh", "2"]).await, int(0));
    assert_eq!(c.cmd(&["SET", "fresh", "3", "NX"]).await, Reply::null());
    assert_eq!(c.cmd(&["SET", "other", "3", "NX"]).await, simple("OK"));
    assert_eq!(c.cmd(&["DEL", "fresh", "other", "nothing"]).await, int(2));
    assert_eq!(c.cmd(&["EXISTS", "fresh"]).await, int(0));
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(2));
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "save"]).await,
        Reply::array(vec![bulk("save"), bulk("")])
    );
    assert_eq!(c.cmd(&["COMMAND"]).await, Reply::array(vec![]));
    assert_eq!(c.cmd(&["COMMAND", "COUNT"]).await, int(0));
    assert_eq!(c.cmd(&["SELECT", "0"]).await, simple("OK"));
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "t"]).await, simple("OK"));
    // Mistakes are answered and the connection stays open.
    assert!(error_text(&c.cmd(&["NOSUCHCOMMAND", "a"]).await).starts_with("ERR unknown command"));
    assert!(error_text(&c.cmd(&["GET"]).await).starts_with("ERR wrong number of arguments"));
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("w"));

    let info = match c.cmd(&["INFO"]).await {
        Reply::Bulk(Some(text)) => String::from_utf8(text.to_vec()).unwrap(),
        other => panic!("INFO: {other:?}"),
    };
    assert!(info.contains(&format!("node_id:{leader}\r\n")), "{info}");
    assert!(info.contains("role:leader\r\n"), "{info}");
    assert!(
        info.contains(&format!("raft_leader_id:{leader}\r\n")),
        "{info}"
    );

    // Pipelining: 100 SETs and a GET in one write; replies come back in order.
    let mut batch = BytesMut::new();
    for i in 0..100 {
        encode_request(
            &["INCRBY".to_owned(), "p".to_owned(), i.to_string()],
            &mut batch,
        );
    }
    encode_request(&["GET", "p"], &mut batch);
    c.raw(&batch).await;
    let mut total = 0;
    for i in 0..100 {
        total += i;
        assert_eq!(c.reply().await, int(total), "reply {i} in order");
    }
    assert_eq!(c.reply().await, bulk(&total.to_string()));

    // A pipeline behaves as if its commands ran one after another: a read sees the writes sent
    // before it and none sent after it.
    let mut batch = BytesMut::new();
    for words in [
        &["SET", "o", "1"][..],
        &["GET", "o"],
        &["SET", "o", "2"],
        &["PING"],
        &["GET", "o"],
        &["MGET", "o", "k"],
        &["DEL", "o"],
        &["EXISTS", "o"],
        &["INCR", "o"],
        &["INCR", "o"],
        &["GET", "o"],
    ] {
        encode_request(words, &mut batch);
    }
    c.raw(&batch).await;
    for expected in [
        simple("OK"),
        bulk("1"),
        simple("OK"),
        simple("PONG"),
        bulk("2"),
        Reply::array(vec![bulk("2"), bulk("w")]),
        int(1),
        int(0),
        int(1),
        int(2),
        bulk("2"),
    ] {
        assert_eq!(c.reply().await, expected);
    }

    // Writes at a follower are forwarded; its reads see every earlier write (linearizable).
    // (Only SETs here: a forwarded write can come back `-UNCERTAIN` when its commit overtakes
    // the leader's answer to the forward, and only an idempotent write may then be repeated.)
    let mut f = Conn::connect(cluster.client_addr(follower)).await;
    for value in ["1", "2"] {
        assert_eq!(
            f.cmd_retrying(&["SET", "via-follower", value]).await,
            simple("OK")
        );
    }
    assert_eq!(f.cmd(&["GET", "via-follower"]).await, bulk("2"));
    assert_eq!(f.cmd(&["GET", "k"]).await, bulk("w"));
    assert_eq!(c.cmd(&["GET", "via-follower"]).await, bulk("2"));
    let info = match f.cmd(&["INFO", "replication"]).await {
        Reply::Bulk(Some(text)) => String::from_utf8(text.to_vec()).unwrap(),
        other => panic!("INFO: {other:?}"),
    };
    assert!(info.contains("role:follower\r\n"), "{info}");

    // QUIT answers and closes.
    assert_eq!(f.cmd(&["QUIT"]).await, simple("OK"));
    assert!(f.until_closed().await.is_empty());

    // Inline commands, as typed into telnet.
    let mut t = Conn::connect(cluster.client_addr(leader)).await;
    t.raw(b"SET inline \"two words\"\r\nGET inline\r\n").await;
    assert_eq!(t.reply().await, simple("OK"));
    assert_eq!(t.reply().await, bulk("two words"));

    // Admin port.
    let (code, head, body) = http_get(cluster.admin_addr(leader), "/status").await;
    assert_eq!(code, 200, "{head}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON status");
    assert_eq!(status["id"], leader);
    assert_eq!(status["role"], "leader");
    assert_eq!(
        status["client_addr"],
        cluster.client_addr(leader).to_string()
    );
    assert!(status["commit_index"].as_u64().unwrap() > 100);
    assert!(status["transport"]["peers"].is_object(), "{body}");
    assert_eq!(status["members"].as_object().unwrap().len(), 3);
    let (code, head, body) = http_get(cluster.admin_addr(follower), "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(body.contains("raft_term "), "{body}");
    assert!(body.contains("raftkv_commands_total "), "{body}");
    let (code, _, _) = http_get(cluster.admin_addr(leader), "/nope").await;
    assert_eq!(code, 404);
    // The cluster view: the three initial voters, with the addresses of the node's config.
    let (code, _, body) = http_get(cluster.admin_addr(follower), "/cluster").await;
    assert_eq!(code, 200, "{body}");
    let view: raftkv::admin_client::ClusterView = serde_json::from_str(&body).expect("a view");
    assert_eq!((view.node, view.leader), (follower, Some(leader)));
    assert_eq!(view.voters, [1, 2, 3]);
    assert!(view.committed && !view.removed);
    assert_eq!(
        view.members[0].client,
        Some(cluster.client_addr(1).to_string())
    );
    // Changes take POST only.
    let (code, head, _) = http_get(cluster.admin_addr(leader), "/cluster/remove?id=3").await;
    assert_eq!(code, 405);
    assert!(head.to_ascii_lowercase().contains("allow: post"), "{head}");

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_forwarding_a_follower_redirects_writes_with_moved() {
    let cluster = TestCluster::start(3, ServerLimits::default(), |config| {
        config.forward = false;
    })
    .await;
    let leader = cluster.leader().await;
    let leader_client = cluster.client_addr(leader);
    let mut l = Conn::connect(leader_client).await;
    assert_eq!(l.cmd_retrying(&["SET", "k", "v"]).await, simple("OK"));
    for follower in cluster.followers(leader) {
        let mut f = Conn::connect(cluster.client_addr(follower)).await;
        for write in [
            &["SET", "k", "x"][..],
            &["INCR", "n"],
            &["DEL", "k"],
            &["SETNX", "a", "b"],
        ] {
            assert_eq!(
                error_text(&f.cmd(write).await),
                format!("MOVED 0 {leader_client}"),
                "{write:?} at follower {follower}"
            );
        }
        // Reads are still served by the follower (ReadIndex through the leader).
        assert_eq!(f.cmd(&["GET", "k"]).await, bulk("v"));
        assert_eq!(f.cmd(&["PING"]).await, simple("PONG"));
    }
    assert_eq!(l.cmd(&["GET", "k"]).await, bulk("v"));
    assert_eq!(l.cmd(&["EXISTS", "n", "a"]).await, int(0));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_longer_than_the_in_flight_cap_is_answered_in_order() {
    let limits = ServerLimits {
        max_in_flight: 8,
        ..ServerLimits::default()
    };
    let cluster = TestCluster::start(1, limits, |_| {}).await;
    let leader = cluster.leader().await;
    let mut c = Conn::connect(cluster.client_addr(leader)).await;
    assert_eq!(c.cmd_retrying(&["SET", "warm", "up"]).await, simple("OK"));
    let mut batch = BytesMut::new();
    for i in 0..2000 {
        if i % 3 == 0 {
            encode_request(&["GET", "c"], &mut batch);
        } else {
            encode_request(&["INCR", "c"], &mut batch);
        }
    }
    c.raw(&batch).await;
    let mut value = 0;
    for i in 0..2000 {
        let reply = c.reply().await;
        if i % 3 == 0 {
            let expected = if value == 0 {
                Reply::null()
            } else {
                bulk(&value.to_string())
            };
            assert_eq!(reply, expected, "GET at {i}");
        } else {
            value += 1;
            assert_eq!(reply, int(value), "INCR at {i}");
        }
    }
    cluster.shutdown().await;
}
