//! The clients: several per node, each sending one operation at a time through the node's RESP
//! port (registers with SET, GET and CAS; counters with INCR and GET), recording every
//! operation with its outcome as a [`Record`].
//!
//! Outcomes follow what raftkv's client library claims: a reply is `ok`; an error the client
//! calls uncertain (a timeout or lost connection after a write went out, `-UNCERTAIN`) is
//! `unknown`; any other error is `fail`, meaning the write certainly did not happen. The checker
//! holds the server to that claim: a "failed" write that took effect is a violation.

use crate::model::{Op, OpResult, Outcome, Record};
use raftkv::client::{Client, ClientConfig, ClientError};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Keys of the workload.
#[derive(Debug, Clone)]
pub struct Keys {
    pub registers: Vec<String>,
    pub counters: Vec<String>,
}

impl Keys {
    pub fn new(registers: usize, counters: usize) -> Keys {
        Keys {
            registers: (0..registers).map(|i| format!("r{i}")).collect(),
            counters: (0..counters).map(|i| format!("n{i}")).collect(),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.registers.iter().chain(&self.counters)
    }

    pub fn is_counter(&self, key: &str) -> bool {
        self.counters.iter().any(|k| k == key)
    }
}

/// Shared by the clients: the clock, record ids, the stop flag and the history's sink.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub start: Instant,
    next_id: Arc<AtomicU64>,
    sink: mpsc::UnboundedSender<Record>,
}

impl Recorder {
    pub fn new(start: Instant) -> (Recorder, mpsc::UnboundedReceiver<Record>) {
        let (sink, records) = mpsc::unbounded_channel();
        let recorder = Recorder {
            start,
            next_id: Arc::new(AtomicU64::new(1)),
            sink,
        };
        (recorder, records)
    }

    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Runs `op` through `client` and records it.
    pub async fn perform(&self, client: &mut Client, client_id: u64, node: u64, op: Op) -> Record {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let call_us = self.now_us();
        let outcome = execute(client, &op).await;
        let record = Record {
            id,
            client: client_id,
            node,
            call_us,
            ret_us: self.now_us(),
            op,
            outcome,
        };
        let _ = self.sink.send(record.clone());
        record
    }
}

/// Sends one operation and classifies the answer.
pub async fn execute(client: &mut Client, op: &Op) -> Outcome {
    let result = match op {
        Op::Get { key } => client.get(key.as_bytes()).await.map(|v| OpResult::Value {
            value: v.map(|b| String::from_utf8_lossy(&b).into_owned()),
        }),
        Op::Set { key, value } => client
            .set(key.as_bytes(), value.as_bytes())
            .await
            .map(|()| OpResult::Written),
        // `CAS` needs a present value to compare with; from absent it is `SETNX`.
        Op::Cas { key, expected, new } => match expected {
            Some(expected) => {
                client
                    .cas(key.as_bytes(), expected.as_bytes(), new.as_bytes())
                    .await
            }
            None => client.setnx(key.as_bytes(), new.as_bytes()).await,
        }
        .map(|swapped| OpResult::Swapped { swapped }),
        Op::Incr { key } => client
            .incr(key.as_bytes())
            .await
            .map(|value| OpResult::Counter { value }),
    };
    match result {
        Ok(result) => Outcome::Ok(result),
        Err(e) => classify(op, &e),
    }
}

fn classify(op: &Op, error: &ClientError) -> Outcome {
    let error_text = error.to_string();
    if op.is_write() && error.is_uncertain() {
        Outcome::Unknown { error: error_text }
    } else {
        Outcome::Fail { error: error_text }
    }
}

/// The settings of the clients.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub clients_per_node: usize,
    /// Operations per second per client, at most.
    pub rate: f64,
    pub keys: Keys,
    pub seed: u64,
}

/// A client's view of a register's last value, to pick plausible CAS arguments.
fn pick_op(
    rng: &mut fastrand::Rng,
    keys: &Keys,
    client: u64,
    seq: u64,
    last: &mut [Option<String>],
) -> Op {
    let roll = rng.u32(0..100);
    if roll < 20 && !keys.counters.is_empty() {
        let key = keys.counters[rng.usize(0..keys.counters.len())].clone();
        return if rng.bool() {
            Op::Incr { key }
        } else {
            Op::Get { key }
        };
    }
    let index = rng.usize(0..keys.registers.len());
    let key = keys.registers[index].clone();
    let value = format!("c{client}-{seq}");
    match roll {
        0..=54 => Op::Get { key },
        55..=79 => Op::Set { key, value },
        _ => Op::Cas {
            key,
            // The last value this client saw, sometimes a stale or absent guess.
            expected: if rng.u32(0..4) == 0 {
                None
            } else {
                last[index].clone()
            },
            new: value,
        },
    }
}

/// Runs the clients until `stop` is set. Each client talks to one node (following redirects
/// the node gives).
pub async fn run(
    config: WorkloadConfig,
    nodes: Vec<(u64, SocketAddr)>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let mut tasks = Vec::new();
    let mut client_id = 0u64;
    for (node, addr) in nodes {
        for _ in 0..config.clients_per_node {
            client_id += 1;
            let (keys, recorder, stop) = (config.keys.clone(), recorder.clone(), stop.clone());
            let seed = config.seed.wrapping_mul(1_000_003).wrapping_add(client_id);
            let period = Duration::from_secs_f64(1.0 / config.rate.max(0.1));
            let id = client_id;
            tasks.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(seed);
                let mut last: Vec<Option<String>> = vec![None; keys.registers.len()];
                let client_config = ClientConfig {
                    connect_timeout: Duration::from_millis(500),
                    request_timeout: Duration::from_secs(2),
                    deadline: Duration::from_secs(3),
                    ..ClientConfig::default()
                };
                let Ok(mut client) = Client::new(vec![addr], client_config) else {
                    return;
                };
                let mut ticker = tokio::time::interval(period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    seq += 1;
                    let op = pick_op(&mut rng, &keys, id, seq, &mut last);
                    let record = recorder.perform(&mut client, id, node, op).await;
                    remember(&keys, &record, &mut last);
                    if matches!(record.outcome, Outcome::Unknown { .. }) {
                        // A fresh connection: the old one may still carry the unknown request.
                        client.disconnect();
                    }
                }
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
}

fn remember(keys: &Keys, record: &Record, last: &mut [Option<String>]) {
    let Some(index) = keys.registers.iter().position(|k| k == record.op.key()) else {
        return;
    };
    match (&record.op, &record.outcome) {
        (Op::Get { .. }, Outcome::Ok(OpResult::Value { value })) => last[index] = value.clone(),
        (Op::Set { value, .. }, Outcome::Ok(_)) => last[index] = Some(value.clone()),
        (Op::Cas { new, .. }, Outcome::Ok(OpResult::Swapped { swapped: true })) => {
            last[index] = Some(new.clone())
        }
        _ => {}
    }
}
