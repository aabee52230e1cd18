//! Shared test helpers: a history builder, a seeded history generator and a
//! brute-force reference checker.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;

use lincheck::{KvInput, KvOutput, Operation};

/// Builds histories by hand; ids are assigned in insertion order and each
/// operation gets its own client (clients do not matter to the checker).
#[derive(Default)]
pub struct Builder {
    ops: Vec<Operation>,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn build(&self) -> Vec<Operation> {
        self.ops.clone()
    }

    fn push(&mut self, call: u64, ret: Option<u64>, input: KvInput, output: Option<KvOutput>) {
        let id = self.ops.len() as u64 + 1;
        self.ops.push(Operation {
            id,
            client: id,
            call,
            ret,
            input,
            output,
        });
    }

    pub fn put(&mut self, call: u64, ret: u64, key: &str, value: &str) -> &mut Self {
        self.push(call, Some(ret), put(key, value), Some(KvOutput::Put));
        self
    }

    pub fn get(&mut self, call: u64, ret: u64, key: &str, value: Option<&str>) -> &mut Self {
        let output = KvOutput::Get {
            value: value.map(str::to_owned),
        };
        self.push(call, Some(ret), get(key), Some(output));
        self
    }

    pub fn delete(&mut self, call: u64, ret: u64, key: &str, existed: bool) -> &mut Self {
        let output = KvOutput::Delete { existed };
        self.push(call, Some(ret), delete(key), Some(output));
        self
    }

    #[allow(clippy::too_many_arguments)] // mirrors the operation's fields
    pub fn cas(
        &mut self,
        call: u64,
        ret: u64,
        key: &str,
        expected: Option<&str>,
        new: &str,
        swapped: bool,
    ) -> &mut Self {
        let output = KvOutput::Cas { swapped };
        self.push(call, Some(ret), cas(key, expected, new), Some(output));
        self
    }

    /// An operation whose client never heard back.
    pub fn unknown(&mut self, call: u64, input: KvInput) -> &mut Self {
        self.push(call, None, input, None);
        self
    }

    /// An operation whose client gave up (timed out) at `gave_up`.
    pub fn timed_out(&mut self, call: u64, gave_up: u64, input: KvInput) -> &mut Self {
        self.push(call, Some(gave_up), input, None);
        self
    }
}

pub fn get(key: &str) -> KvInput {
    KvInput::Get { key: key.into() }
}

pub fn put(key: &str, value: &str) -> KvInput {
    KvInput::Put {
        key: key.into(),
        value: value.into(),
    }
}

pub fn delete(key: &str) -> KvInput {
    KvInput::Delete { key: key.into() }
}

pub fn cas(key: &str, expected: Option<&str>, new: &str) -> KvInput {
    KvInput::Cas {
        key: key.into(),
        expected: expected.map(str::to_owned),
        new: new.into(),
    }
}

/// SplitMix64: tiny, seedable and good enough to drive test generators.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound > 0`); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Copy, Debug)]
pub struct GenConfig {
    pub clients: u64,
    pub keys: u64,
    pub ops: usize,
    /// Chance that an operation's outcome is unknown.
    pub unknown_per_mille: u64,
    /// Longest time an operation may take.
    pub max_latency: u64,
    /// Chance that an operation goes to key `k0` rather than a uniformly
    /// chosen key, to make one key hot.
    pub hot_key_per_mille: u64,
}

/// Generates a history that is linearizable by construction: every
/// operation gets a linearization point inside its interval (unknown
/// outcomes: any time after the call, or never), and outputs come from
/// executing the operations in linearization-point order against a map.
pub fn generate(seed: u64, config: GenConfig) -> Vec<Operation> {
    let mut rng = Rng::new(seed);
    let mut client_time: Vec<u64> = (0..config.clients).map(|_| rng.below(5)).collect();
    // Values put on each key so far, so that CAS often expects a live value.
    let mut written: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ops = Vec::with_capacity(config.ops);
    // (linearization point, tie breaker, index into ops); `None` = never applied.
    let mut points = Vec::with_capacity(config.ops);
    let mut unknown_outcome = Vec::with_capacity(config.ops);

    for index in 0..config.ops {
        let id = index as u64 + 1;
        let client = rng.below(config.clients);
        let call = client_time[client as usize] + rng.below(3);
        let latency = rng.below(config.max_latency + 1);
        let ret = call + latency;
        let key = if rng.chance(config.hot_key_per_mille) {
            "k0".to_owned()
        } else {
            format!("k{}", rng.below(config.keys))
        };
        let fresh_value = format!("v{id}");
        let recent = written.entry(key.clone()).or_default();
        let recent_value = |rng: &mut Rng| {
            let start = recent.len().saturating_sub(3);
            if recent.is_empty() || rng.chance(200) {
                None
            } else {
                Some(rng.pick(&recent[start..]).clone())
            }
        };
        let input = match rng.below(100) {
            0..40 => get(&key),
            40..65 => put(&key, &fresh_value),
            65..75 => delete(&key),
            _ => KvInput::Cas {
                key: key.clone(),
                expected: recent_value(&mut rng),
                new: fresh_value.clone(),
            },
        };
        if matches!(input, KvInput::Put { .. } | KvInput::Cas { .. }) {
            recent.push(fresh_value);
        }

        let unknown = rng.chance(config.unknown_per_mille);
        let point = if !unknown {
            Some(call + rng.below(latency + 1))
        } else if rng.chance(500) {
            // Applied, possibly long after the client gave up.
            Some(call + rng.below(4 * config.max_latency + 1))
        } else {
            None
        };
        if let Some(point) = point {
            points.push((point, rng.next_u64(), index));
        }
        // Half of the unknown outcomes record when the client gave up.
        let recorded_ret = (!unknown || rng.chance(500)).then_some(ret);
        client_time[client as usize] = ret;
        unknown_outcome.push(unknown);
        ops.push(Operation {
            id,
            client,
            call,
            ret: recorded_ret,
            input,
            output: None,
        });
    }

    points.sort_unstable();
    let mut store = Store::default();
    for (_, _, index) in points {
        let output = store.apply(&ops[index].input);
        if !unknown_outcome[index] {
            ops[index].output = Some(output);
        }
    }
    ops
}

/// The sequential specification: a map from key to value.
#[derive(Default, Clone)]
pub struct Store {
    values: BTreeMap<String, String>,
}

impl Store {
    pub fn apply(&mut self, input: &KvInput) -> KvOutput {
        match input {
            KvInput::Get { key } => KvOutput::Get {
                value: self.values.get(key).cloned(),
            },
            KvInput::Put { key, value } => {
                self.values.insert(key.clone(), value.clone());
                KvOutput::Put
            }
            KvInput::Delete { key } => KvOutput::Delete {
                existed: self.values.remove(key).is_some(),
            },
            KvInput::Cas { key, expected, new } => {
                let swapped = self.values.get(key) == expected.as_ref();
                if swapped {
                    self.values.insert(key.clone(), new.clone());
                }
                KvOutput::Cas { swapped }
            }
        }
    }
}

/// Reference checker for tiny histories: tries every order of the
/// operations that respects real time (`a.ret < b.call` forces `a` first),
/// letting unknown outcomes be placed anywhere after their call or dropped.
pub fn brute_force_linearizable(history: &[Operation]) -> bool {
    fn extend(history: &[Operation], remaining: &mut Vec<usize>, store: &Store) -> bool {
        if remaining.iter().all(|&i| history[i].output.is_none()) {
            return true; // unknown outcomes may simply never have happened
        }
        for position in 0..remaining.len() {
            let candidate = &history[remaining[position]];
            let must_come_first = remaining.iter().any(|&other| {
                let other = &history[other];
                other.output.is_some() && other.ret.is_some_and(|ret| ret < candidate.call)
            });
            if must_come_first {
                continue;
            }
            let mut next = store.clone();
            let output = next.apply(&candidate.input);
            if candidate
                .output
                .as_ref()
                .is_some_and(|seen| *seen != output)
            {
                continue;
            }
            let index = remaining.remove(position);
            let found = extend(history, remaining, &next);
            remaining.insert(position, index);
            if found {
                return true;
            }
        }
        false
    }
    let mut remaining: Vec<usize> = (0..history.len()).collect();
    extend(history, &mut remaining, &Store::default())
}
