//! Writes the seed corpora under `fuzz/corpus/<target>/`: real inputs made by the code under
//! test itself (RESP requests and replies, framed messages, hellos, WAL segments written by
//! the WAL, snapshot files, the example configuration, the repository's scenarios). Run from
//! `fuzz/`: `cargo run --release --example seeds`. Files are named after what they hold and
//! rewritten in place, so running it again changes nothing unless the formats changed.

// Linked so that an instrumented build (the flags of scripts/fuzz.sh) finds the coverage
// runtime; the example defines its own `main`.
use libfuzzer_sys as _;

use bytes::{Bytes, BytesMut};
use raftengine::{
    Entry, EntryPayload, HardState, LogId, LogIndex, LogWrite, Membership, MembershipChange,
    Message, MessageBody, NodeId, Term,
};
use raftengine_fuzz::{scratch_dir, WalInput};
use raftkv::resp::{encode_reply, encode_request, Reply};
use raftnet::transport::wire::{self, Hello, HelloReply, Lane};
use raftwal::{encode_snapshot_file, Wal, WalOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use tokio_util::codec::Encoder;

/// No seed file may be larger than this.
const MAX_SEED_BYTES: usize = 64 * 1024;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    assert!(
        bytes.len() <= MAX_SEED_BYTES,
        "{target}/{name}: {} bytes",
        bytes.len()
    );
    let dir = root().join("corpus").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn request(words: &[&[u8]]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_request(words, &mut buf);
    buf.to_vec()
}

fn resp_seeds() {
    let set = request(&[b"SET", b"key", b"value"]);
    write("resp", "set", &set);
    write("resp", "get", &request(&[b"GET", b"key"]));
    write("resp", "del", &request(&[b"DEL", b"a", b"b", b"c"]));
    write("resp", "incr", &request(&[b"INCR", b"counter"]));
    write("resp", "cas", &request(&[b"CAS", b"key", b"old", b"new"]));
    write("resp", "ping", &request(&[b"PING"]));
    write(
        "resp",
        "binary_value",
        &request(&[b"SET", b"k", b"\0\r\n\xff$*"]),
    );
    write("resp", "empty_word", &request(&[b"SET", b"", b""]));
    write("resp", "inline_get", b"GET key\r\n");
    write("resp", "inline_nc", b"SET key value\n");
    write("resp", "inline_quotes", b"SET \"a b\\x41\\n\" 'it\\'s'\r\n");
    write("resp", "empty_requests", b"*0\r\n*-1\r\n\r\n   \r\n");
    let mut pipelined = Vec::new();
    for i in 0..8u8 {
        pipelined.extend_from_slice(&request(&[b"SET", &[b'k', b'0' + i], b"v"]));
    }
    pipelined.extend_from_slice(b"GET k1\r\n");
    write("resp", "pipelined", &pipelined);
    write("resp", "null_bulk", b"*1\r\n$-1\r\n");
    write("resp", "header_only", b"*1\r\n$67108864\r\n");

    let replies = [
        ("ok", Reply::ok()),
        (
            "error",
            Reply::Error("ERR wrong number of arguments".into()),
        ),
        ("moved", Reply::Error("MOVED 0 127.0.0.1:6379".into())),
        ("integer", Reply::Integer(-42)),
        ("bulk", Reply::bulk(Bytes::from_static(b"value\r\n"))),
        ("null", Reply::null()),
        ("null_array", Reply::Array(None)),
        (
            "nested",
            Reply::array(vec![
                Reply::Integer(1),
                Reply::array(vec![Reply::bulk(Bytes::from_static(b"x")), Reply::null()]),
                Reply::ok(),
            ]),
        ),
    ];
    for (name, reply) in replies {
        let mut buf = BytesMut::new();
        encode_reply(&reply, &mut buf);
        write("resp_reply", name, &buf);
    }
}

fn membership() -> Membership {
    Membership {
        voters: [1, 2, 3].into_iter().map(NodeId).collect(),
        outgoing: BTreeSet::new(),
        learners: [4].into_iter().map(NodeId).collect(),
        addresses: [(1, "127.0.0.1:7001"), (4, "127.0.0.4:7004")]
            .into_iter()
            .map(|(id, addr)| (NodeId(id), addr.to_string()))
            .collect(),
    }
}

fn messages() -> Vec<(&'static str, Message)> {
    let message = |body| Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body,
    };
    let entries = vec![
        Entry {
            term: Term(3),
            index: LogIndex(10),
            payload: EntryPayload::TermStart,
        },
        Entry {
            term: Term(3),
            index: LogIndex(11),
            payload: EntryPayload::Command(b"set k v".to_vec()),
        },
        Entry {
            term: Term(3),
            index: LogIndex(12),
            payload: EntryPayload::Membership(membership()),
        },
    ];
    vec![
        (
            "append_entries",
            message(MessageBody::AppendEntries {
                prev_log_index: LogIndex(9),
                prev_log_term: Term(2),
                entries,
                leader_commit: LogIndex(9),
                read_round: 4,
                transfer: 0,
                repair_epoch: 0,
            }),
        ),
        (
            "heartbeat",
            message(MessageBody::AppendEntries {
                prev_log_index: LogIndex(12),
                prev_log_term: Term(3),
                entries: Vec::new(),
                leader_commit: LogIndex(12),
                read_round: 5,
                transfer: 1,
                repair_epoch: 2,
            }),
        ),
        (
            "append_response",
            message(MessageBody::AppendEntriesResponse {
                success: true,
                match_index: LogIndex(12),
                reject_hint: LogIndex(0),
                last_log_index: LogIndex(12),
                prev_log_index: LogIndex(9),
                read_round: 4,
                repairing: false,
                repair_epoch: 0,
            }),
        ),
        (
            "vote_request",
            message(MessageBody::VoteRequest {
                last_log_index: LogIndex(12),
                last_log_term: Term(3),
                transfer: Some(1),
            }),
        ),
        (
            "pre_vote",
            message(MessageBody::PreVoteRequest {
                last_log_index: LogIndex(12),
                last_log_term: Term(3),
                transfer: false,
            }),
        ),
        (
            "install_snapshot",
            message(MessageBody::InstallSnapshot {
                last_included: LogId {
                    index: LogIndex(100),
                    term: Term(3),
                },
                membership: membership(),
                offset: 0,
                data: b"snapshot chunk".to_vec(),
                done: false,
            }),
        ),
        (
            "propose",
            message(MessageBody::Propose {
                request: 7,
                command: b"forwarded".to_vec(),
            }),
        ),
        (
            "change_membership",
            message(MessageBody::ChangeMembership {
                request: 8,
                change: MembershipChange::Joint {
                    add: BTreeMap::from([(NodeId(5), "127.0.0.5:7005".to_string())]),
                    remove: BTreeSet::from([NodeId(3)]),
                },
            }),
        ),
        (
            "change_membership_response",
            message(MessageBody::ChangeMembershipResponse {
                request: 8,
                result: Ok(membership()),
            }),
        ),
        (
            "read_index_response",
            message(MessageBody::ReadIndexResponse {
                request: 9,
                read_index: Some(LogIndex(12)),
            }),
        ),
    ]
}

fn framed(payload: Bytes) -> Vec<u8> {
    let mut buf = BytesMut::new();
    wire::codec(1 << 20).encode(payload, &mut buf).unwrap();
    buf.to_vec()
}

fn wire_seeds() {
    let mut stream = Vec::new();
    for (order, (name, message)) in messages().into_iter().enumerate() {
        let frame = framed(wire::encode_frame(order as u64, &message).unwrap());
        stream.extend_from_slice(&frame);
        write("peer_frame", name, &frame);
    }
    write("peer_frame", "stream", &stream);

    for (name, lane) in [("hello_control", Lane::Control), ("hello_bulk", Lane::Bulk)] {
        write(
            "handshake",
            name,
            &framed(wire::encode(&Hello::on(7, NodeId(2), lane)).unwrap()),
        );
    }
    let mut other_version = Hello::new(7, NodeId(2));
    other_version.protocol_version = 1;
    write(
        "handshake",
        "hello_version_1",
        &framed(wire::encode(&other_version).unwrap()),
    );
    write(
        "handshake",
        "welcome",
        &framed(wire::encode(&HelloReply::Welcome).unwrap()),
    );
    let refused = HelloReply::Refused {
        reason: "cluster id 8 does not match this node's cluster id 7".into(),
    };
    write(
        "handshake",
        "refused",
        &framed(wire::encode(&refused).unwrap()),
    );
}

/// A log written by the WAL itself, in 4 KiB segments, as the `wal` target's input.
fn wal_seed(name: &str, writes: &[Vec<LogWrite>], flags: (bool, bool)) {
    let dir = scratch_dir("seeds");
    {
        let mut wal = Wal::open(WalOptions::new(&dir).segment_bytes(4096)).unwrap();
        for batch in writes {
            for write in batch {
                wal.write(write).unwrap();
            }
            wal.sync().unwrap();
        }
    }
    let mut segments = Vec::new();
    let mut names: Vec<_> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    for name in names {
        let (_, first) = name.trim_end_matches(".wal").split_once('-').unwrap();
        let first = u64::from_str_radix(first, 16).unwrap();
        segments.push((first, fs::read(dir.join("wal").join(&name)).unwrap()));
    }
    let input = WalInput {
        fix_headers: flags.0,
        fix_frames: flags.1,
        segments,
    };
    write("wal", name, &input.encode());
    fs::remove_dir_all(&dir).unwrap();
}

fn entries(from: u64, to: u64, term: u64, bytes: usize) -> LogWrite {
    LogWrite::Append(
        (from..=to)
            .map(|i| Entry {
                term: Term(term),
                index: LogIndex(i),
                payload: EntryPayload::Command(vec![b'a' + (i % 26) as u8; bytes]),
            })
            .collect(),
    )
}

fn wal_seeds() {
    let hard_state = |term: u64, vote: Option<u64>| {
        LogWrite::HardState(HardState {
            term: Term(term),
            voted_for: vote.map(NodeId),
        })
    };
    let small = vec![
        vec![hard_state(1, Some(1))],
        vec![LogWrite::Append(vec![
            Entry {
                term: Term(1),
                index: LogIndex(1),
                payload: EntryPayload::Membership(membership()),
            },
            Entry {
                term: Term(1),
                index: LogIndex(2),
                payload: EntryPayload::TermStart,
            },
        ])],
        vec![entries(3, 5, 1, 16), LogWrite::Commit(LogIndex(4))],
        vec![LogWrite::Repair {
            epoch: 1,
            repairing: true,
        }],
    ];
    wal_seed("small_fixed", &small, (true, true));
    wal_seed("small_as_is", &small, (false, false));
    // Enough to roll over into further segments, a truncation and a purge.
    let rolling = vec![
        vec![hard_state(2, Some(2)), entries(1, 20, 2, 100)],
        vec![entries(21, 40, 2, 100), LogWrite::Commit(LogIndex(30))],
        vec![
            LogWrite::TruncateFrom(LogIndex(35)),
            entries(35, 50, 3, 100),
        ],
        vec![
            hard_state(3, None),
            LogWrite::Purge {
                through: LogIndex(10),
                term: Term(2),
            },
        ],
    ];
    wal_seed("segments_fixed", &rolling, (true, true));
    wal_seed("segments_as_is", &rolling, (false, false));
}

fn snapshot_seeds() {
    let id = |index, term| LogId {
        index: LogIndex(index),
        term: Term(term),
    };
    let files = [
        (
            "empty",
            encode_snapshot_file(id(0, 0), &Membership::default(), b""),
        ),
        (
            "small",
            encode_snapshot_file(id(100, 3), &membership(), b"{\"k\":\"v\"}"),
        ),
        (
            "binary",
            encode_snapshot_file(
                id(7, 1),
                &Membership::with_voters([NodeId(1)]),
                &[0, 1, 2, 255],
            ),
        ),
    ];
    for (name, file) in files {
        // The target's first byte: bit 0 set recomputes the checksum.
        let mut input = vec![1];
        input.extend_from_slice(&file);
        write("snapshot_file", &format!("{name}_fixed"), &input);
        input[0] = 0;
        write("snapshot_file", &format!("{name}_as_is"), &input);
    }
}

fn config_seeds() {
    let repo = root().join("..");
    write(
        "config_toml",
        "example_raftkv",
        &fs::read(repo.join("examples/raftkv.toml")).unwrap(),
    );
    // The documented example (crates/raftkv/src/config.rs), complete.
    let documented = "id = 1\ncluster_id = 7\ndata_dir = \"./raft-data/node-1\"\nadmin = \"127.0.0.1:9101\"\n\
        forward = true\ntick_ms = 10\nelection_ms = [1000, 2000]\nsnapshot_entries = 100000\n\
        retain_entries = 5000\njoin = false\nthreads = 1\nmax_command_bytes = 1048576\n\
        segment_bytes = 67108864\nraft_listen = \"0.0.0.0:7101\"\npeer_source_ip = \"10.0.0.1\"\n\
        lease_reads = false\n\n[[nodes]]\nid = 1\nraft = \"127.0.0.1:7101\"\nclient = \"127.0.0.1:6101\"\n\n\
        [[nodes]]\nid = 2\nraft = \"localhost:7102\"\nclient = \"[::1]:6102\"\n";
    write("config_toml", "documented", documented.as_bytes());
    write(
        "config_toml",
        "join",
        b"id = 4\njoin = true\nnodes = [{ id = 1, raft = \"127.0.0.1:7101\", client = \"127.0.0.1:6101\" }, { id = 4, raft = \"127.0.0.4:7104\", client = \"127.0.0.4:6104\" }]\n",
    );
}

fn scenario_seeds() {
    let scenarios = root().join("../scenarios");
    let mut found = Vec::new();
    for topic in fs::read_dir(&scenarios).unwrap() {
        let topic = topic.unwrap().path();
        if !topic.is_dir() {
            continue;
        }
        for file in fs::read_dir(&topic).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "scn") {
                found.push(file);
            }
        }
    }
    found.sort();
    for file in found {
        let topic = file
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let stem = file.file_stem().unwrap().to_str().unwrap();
        write(
            "scenario",
            &format!("{topic}__{stem}.scn"),
            &fs::read(&file).unwrap(),
        );
    }
}

fn main() {
    resp_seeds();
    wire_seeds();
    wal_seeds();
    snapshot_seeds();
    config_seeds();
    scenario_seeds();
    println!(
        "seed corpora written under {}",
        root().join("corpus").display()
    );
}
