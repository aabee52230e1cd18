//! `raftkv get/set/del` (the library side of the subcommands) against a local 3-process cluster:
//! replies rendered as `redis-cli` renders them, any node accepted, failures reported.

use raftkv::cli_client::{self, CliError, ClientArgs, ClientCommand, DelArgs, GetArgs, SetArgs};
use raftkv::demo::{LocalCluster, LocalClusterOptions};
use std::path::PathBuf;
use std::time::Duration;

fn args(nodes: &[std::net::SocketAddr]) -> ClientArgs {
    ClientArgs {
        nodes: nodes.iter().map(ToString::to_string).collect(),
        timeout: 10.0,
        security: Default::default(),
    }
}

async fn run(command: ClientCommand) -> String {
    match cli_client::run(&command).await {
        Ok(output) => output,
        Err(error) => panic!("{command:?} failed: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_set_del_print_like_redis_cli_through_any_node() {
    let mut cluster = LocalCluster::start(LocalClusterOptions {
        server_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_raftkv"))),
        ..LocalClusterOptions::default()
    })
    .await
    .expect("cluster starts");
    let (leader, _) = cluster
        .wait_for_leader(None, 0, Duration::from_secs(10))
        .await
        .expect("a leader");
    let follower = (leader + 1) % 3;
    let all = args(&cluster.client_addrs());
    let only_follower = args(&[cluster.nodes()[follower].client_addr]);

    let set = |client: &ClientArgs, key: &str, value: &str| {
        ClientCommand::Set(SetArgs {
            client: client.clone(),
            key: key.into(),
            value: value.into(),
        })
    };
    let get = |client: &ClientArgs, key: &str| {
        ClientCommand::Get(GetArgs {
            client: client.clone(),
            key: key.into(),
        })
    };
    assert_eq!(
        run(set(&only_follower, "greeting", "hello \"world\"\n")).await,
        "OK"
    );
    assert_eq!(run(get(&all, "greeting")).await, r#""hello \"world\"\n""#);
    assert_eq!(run(get(&only_follower, "missing")).await, "(nil)");
    let del = ClientCommand::Del(DelArgs {
        client: all.clone(),
        keys: vec!["greeting".into(), "missing".into()],
    });
    assert_eq!(run(del).await, "(integer) 1");
    assert_eq!(run(get(&all, "greeting")).await, "(nil)");

    // A node list whose first node is down still works.
    cluster.kill(follower).await;
    let mut nodes = vec![cluster.nodes()[follower].client_addr];
    nodes.push(cluster.nodes()[leader].client_addr);
    assert_eq!(run(set(&args(&nodes), "k", "v")).await, "OK");

    cluster.shutdown(Duration::from_secs(5)).await;
    // Nothing listening: an error with the reason, within the timeout.
    let command = ClientCommand::Get(GetArgs {
        client: ClientArgs {
            timeout: 0.3,
            ..all.clone()
        },
        key: "k".into(),
    });
    match cli_client::run(&command).await {
        Err(CliError::Client(error)) => {
            assert!(error.to_string().contains("no node could serve"), "{error}")
        }
        other => panic!("expected a client error, got {other:?}"),
    }
    let bad = ClientCommand::Get(GetArgs {
        client: ClientArgs {
            timeout: -1.0,
            ..all
        },
        key: "k".into(),
    });
    assert!(matches!(
        cli_client::run(&bad).await,
        Err(CliError::BadTimeout(_))
    ));
}
