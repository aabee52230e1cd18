//! The single-key search: Wing & Gong / Lowe just-in-time linearization
//! with Porcupine's cache, extended for unknown outcomes (see the crate
//! documentation).

use std::collections::HashMap;

use crate::history::{KvInput, KvOutput, Operation};

/// Values are interned per key so that model states are small, cheap to
/// compare and cheap to store in the cache.
type ValueId = u32;

/// The model state of one key: `None` = absent.
type State = Option<ValueId>;

#[derive(PartialEq, Eq, Hash)]
enum Effect {
    Get,
    Put(ValueId),
    Delete,
    Cas {
        expected: Option<ValueId>,
        new: ValueId,
    },
}

enum Observed {
    Get(Option<ValueId>),
    Put,
    Delete(bool),
    Cas(bool),
}

/// One operation of the key being checked, in the checker's own terms.
pub(crate) struct KeyOp<'h> {
    pub(crate) original: &'h Operation,
    effect: Effect,
    /// `None` = unknown outcome: any output is accepted and the return time
    /// is +infinity.
    observed: Option<Observed>,
}

impl KeyOp<'_> {
    fn is_completed(&self) -> bool {
        self.observed.is_some()
    }

    /// Applies the operation to `state`; `None` when the recorded output
    /// contradicts the state.
    fn step(&self, state: State) -> Option<State> {
        match (&self.effect, &self.observed) {
            (Effect::Get, None) => Some(state),
            (Effect::Get, Some(Observed::Get(value))) => (*value == state).then_some(state),
            (Effect::Put(value), None | Some(Observed::Put)) => Some(Some(*value)),
            (Effect::Delete, None) => Some(None),
            (Effect::Delete, Some(Observed::Delete(existed))) => {
                (*existed == state.is_some()).then_some(None)
            }
            (Effect::Cas { expected, new }, observed) => {
                let swaps = state == *expected;
                let after = if swaps { Some(*new) } else { state };
                match observed {
                    None => Some(after),
                    Some(Observed::Cas(swapped)) => (*swapped == swaps).then_some(after),
                    Some(_) => None,
                }
            }
            // Kinds that do not match are rejected by `validate`; treating
            // them as impossible keeps this total without panicking.
            _ => None,
        }
    }
}

/// The operations of one key with their values interned.
pub(crate) struct KeyHistory<'h> {
    pub(crate) ops: Vec<KeyOp<'h>>,
    /// For each unknown outcome (by index in `ops`): its class of unknown
    /// outcomes with identical effects, and its position in that class by
    /// call order. `None` for completed operations.
    symmetry: Vec<Option<(usize, usize)>>,
}

impl<'h> KeyHistory<'h> {
    /// `ops` must all touch the same key. Unknown-outcome reads are dropped:
    /// they change nothing and accept any output, so they never constrain
    /// the search.
    pub(crate) fn new(ops: &[&'h Operation]) -> Self {
        // Values that no operation ever compares against (no read returns
        // them, no CAS expects them) behave identically for every operation
        // here, so they are all interned as one anonymous value. Mapping
        // them together preserves every output and so every verdict, and
        // it makes unknown writes of such values interchangeable.
        let mut interner = Interner::default();
        for op in ops {
            if let KvInput::Cas {
                expected: Some(expected),
                ..
            } = &op.input
            {
                interner.intern(expected);
            }
            if let Some(KvOutput::Get { value: Some(value) }) = &op.output {
                interner.intern(value);
            }
        }
        let mut key_ops: Vec<KeyOp<'h>> = ops
            .iter()
            .filter(|op| op.is_completed() || !matches!(op.input, KvInput::Get { .. }))
            .map(|op| {
                let effect = match &op.input {
                    KvInput::Get { .. } => Effect::Get,
                    KvInput::Put { value, .. } => Effect::Put(interner.id(value)),
                    KvInput::Delete { .. } => Effect::Delete,
                    KvInput::Cas { expected, new, .. } => Effect::Cas {
                        expected: expected.as_deref().map(|v| interner.id(v)),
                        new: interner.id(new),
                    },
                };
                let observed = op.output.as_ref().map(|output| match output {
                    KvOutput::Get { value } => {
                        Observed::Get(value.as_deref().map(|v| interner.id(v)))
                    }
                    KvOutput::Put => Observed::Put,
                    KvOutput::Delete { existed } => Observed::Delete(*existed),
                    KvOutput::Cas { swapped } => Observed::Cas(*swapped),
                });
                KeyOp {
                    original: op,
                    effect,
                    observed,
                }
            })
            .collect();
        // A deterministic order makes the search (and its reports) reproducible.
        key_ops.sort_by_key(|op| (op.original.call, op.original.id));

        let mut classes: HashMap<&Effect, (usize, usize)> = HashMap::new();
        let symmetry = key_ops
            .iter()
            .map(|op| {
                if op.is_completed() {
                    return None;
                }
                let next_class = classes.len();
                let (class, members) = classes.entry(&op.effect).or_insert((next_class, 0));
                *members += 1;
                Some((*class, *members - 1))
            })
            .collect();
        KeyHistory {
            ops: key_ops,
            symmetry,
        }
    }
}

/// Gives each compared-against value its own id and every other value the
/// shared anonymous id.
#[derive(Default)]
struct Interner<'h> {
    ids: HashMap<&'h str, ValueId>,
}

impl<'h> Interner<'h> {
    const ANONYMOUS: ValueId = 0;

    fn intern(&mut self, value: &'h str) {
        // A key has fewer than 2^32 distinct values in any history that fits
        // in memory; saturate rather than panic if that is ever violated.
        let next = ValueId::try_from(self.ids.len() + 1).unwrap_or(ValueId::MAX);
        self.ids.entry(value).or_insert(next);
    }

    fn id(&self, value: &str) -> ValueId {
        self.ids.get(value).copied().unwrap_or(Self::ANONYMOUS)
    }
}

pub(crate) enum SearchOutcome {
    Linearizable,
    Violation(Stuck),
    BudgetExhausted { longest_prefix: usize },
}

/// The deepest point the search reached before it had to backtrack.
pub(crate) struct Stuck {
    /// Indices into [`KeyHistory::ops`], in linearization order.
    pub(crate) prefix: Vec<usize>,
    /// The operation whose return came next and that could not be
    /// linearized after `prefix`.
    pub(crate) blocking: usize,
}

/// At equal times calls sort before returns, so an operation returning at
/// `t` is concurrent with one called at `t` (happened-before is strict
/// `ret < call`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    Call,
    Return,
}

const NIL: usize = usize::MAX;
/// Head of the chain of completed operations' calls and returns.
const COMPLETED_HEAD: usize = 0;
/// Head of the chain of unknown outcomes' calls. Their returns are at
/// +infinity, after every completed return, so they never bound anything
/// and are not represented.
const UNKNOWN_HEAD: usize = 1;
const FIRST_EVENT: usize = 2;

/// The events, sorted by time, as two index-based doubly linked lists, so
/// that linearizing an operation unlinks its events in O(1) and
/// backtracking links them back (dancing links). Keeping unknown outcomes
/// in their own chain means the common walk over completed operations does
/// not step over every unknown outcome that has not been placed.
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Operation index of each node (`NIL` for heads).
    op: Vec<usize>,
    /// For a completed call node, its return node; `NIL` otherwise.
    matching_return: Vec<usize>,
    /// Rank in the global time order, to compare nodes across chains.
    rank: Vec<usize>,
    is_call: Vec<bool>,
}

impl EventList {
    fn new(history: &KeyHistory<'_>) -> Self {
        let mut events: Vec<(u64, EventKind, usize)> = Vec::with_capacity(history.ops.len() * 2);
        for (index, op) in history.ops.iter().enumerate() {
            events.push((op.original.call, EventKind::Call, index));
            if let (true, Some(ret)) = (op.is_completed(), op.original.ret) {
                events.push((ret, EventKind::Return, index));
            }
        }
        events.sort_unstable();

        let nodes = FIRST_EVENT + events.len();
        let mut list = EventList {
            next: vec![NIL; nodes],
            prev: vec![NIL; nodes],
            op: vec![NIL; nodes],
            matching_return: vec![NIL; nodes],
            rank: vec![NIL; nodes],
            is_call: vec![false; nodes],
        };
        let mut tails = [COMPLETED_HEAD, UNKNOWN_HEAD];
        let mut call_node = vec![NIL; history.ops.len()];
        for (rank, &(_, kind, op_index)) in events.iter().enumerate() {
            let node = FIRST_EVENT + rank;
            list.op[node] = op_index;
            list.rank[node] = rank;
            list.is_call[node] = kind == EventKind::Call;
            let completed = history.ops.get(op_index).is_some_and(KeyOp::is_completed);
            let tail = &mut tails[usize::from(!completed)];
            list.prev[node] = *tail;
            list.next[*tail] = node;
            *tail = node;
            match kind {
                EventKind::Call => call_node[op_index] = node,
                // Sorting puts every call before its return.
                EventKind::Return => {
                    if let Some(&call) = call_node.get(op_index) {
                        if call != NIL {
                            list.matching_return[call] = node;
                        }
                    }
                }
            }
        }
        list
    }

    fn is_call(&self, node: usize) -> bool {
        self.is_call.get(node).copied().unwrap_or(false)
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    /// Removes a call node and, for a completed operation, its return.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.matching_return[call];
        if ret != NIL {
            self.unlink(ret);
        }
    }

    /// Undoes the matching [`EventList::lift`]; lifts are undone in LIFO order.
    fn unlift(&mut self, call: usize) {
        let ret = self.matching_return[call];
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

fn set_bit(words: &mut [u64], bit: usize, value: bool) {
    if let Some(word) = words.get_mut(bit / 64) {
        if value {
            *word |= 1 << (bit % 64);
        } else {
            *word &= !(1 << (bit % 64));
        }
    }
}

fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small.iter().zip(large).all(|(s, l)| s & !l == 0)
}

fn state_word(state: State) -> u64 {
    state.map_or(0, |id| u64::from(id) + 1)
}

/// An unknown outcome on the current path whose effect nothing has observed
/// yet, with the state the path would have without it.
///
/// If that state becomes equal to the real one before some operation's
/// output tells the two apart, the unknown outcome made no difference and
/// the path is cut: the same path without it is explored anyway. This is
/// sound because a shortest linearization never contains such an operation
/// (dropping it leaves every output valid), and it is what keeps unknown
/// outcomes from multiplying the search: an unknown write is only worth
/// applying right where someone is about to observe it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Shadow {
    unknown_slot: usize,
    state: State,
}

/// Configurations whose exploration finished without success: Porcupine's
/// cache, strengthened by dominance on unknown outcomes.
///
/// A configuration is keyed by its linearized completed operations, its
/// state and its shadows, and carries the set of unknown outcomes used.
/// Configuration A dominates B if they have the same key (or A has no
/// shadows, i.e. fewer restrictions, and otherwise the same key) and A's
/// unknown set is a subset of B's: every completion open to B is open to A,
/// since the unknown outcomes A has not used can be left out. So if A
/// failed, B is skipped. Without unknown outcomes this is exactly
/// Porcupine's equality cache.
struct FailedConfigs {
    /// Antichains of unknown sets (as bit vectors), keyed by [`build_key`].
    unknown_sets: HashMap<Box<[u64]>, Vec<Box<[u64]>>>,
}

impl FailedConfigs {
    fn dominates(&self, key: &[u64], key_without_shadows: usize, unknown: &[u64]) -> bool {
        let covered = |key: &[u64]| {
            self.unknown_sets
                .get(key)
                .is_some_and(|sets| sets.iter().any(|seen| is_subset(seen, unknown)))
        };
        covered(key) || (key_without_shadows < key.len() && covered(&key[..key_without_shadows]))
    }

    fn insert(&mut self, key: &[u64], unknown: &[u64]) {
        match self.unknown_sets.get_mut(key) {
            Some(sets) => {
                // Keep an antichain: the new set dominates its supersets.
                sets.retain(|seen| !is_subset(unknown, seen));
                sets.push(unknown.into());
            }
            None => {
                self.unknown_sets.insert(key.into(), vec![unknown.into()]);
            }
        }
    }
}

/// An operation on the current path of the search, with what is needed to
/// undo it.
struct Applied {
    call: usize,
    state_before: State,
    /// The pass the parent configuration was in when this was applied.
    unknown_pass_before: Option<usize>,
    shadows_before: Vec<Shadow>,
}

/// Searches for a linearization of one key's operations, starting from an
/// absent key, in at most `max_steps` steps (events visited).
///
/// The candidates at each configuration are the calls before the first
/// unlinearized completed return (the deadline). They are tried in two
/// passes: completed operations first, unknown outcomes second, so that the
/// configurations without unknown outcomes are visited first and then
/// dominate the ones with them (see [`FailedConfigs`] and [`Shadow`]).
pub(crate) fn search(history: &KeyHistory<'_>, max_steps: u64) -> SearchOutcome {
    let mut search = Search::new(history);
    search.run(max_steps)
}

struct Search<'k, 'h> {
    history: &'k KeyHistory<'h>,
    list: EventList,
    /// Index of each operation among the unknown outcomes (for the bit
    /// vector of used unknown outcomes); unused for completed operations.
    unknown_slot: Vec<usize>,
    completed_total: usize,
    completed_linearized: usize,
    unknown_used: Vec<u64>,
    /// How many unknown outcomes of each symmetry class are in use. Only
    /// the first unused member of a class (by call order) is ever tried:
    /// identical effects and infinite returns make members interchangeable,
    /// and the earliest-called one is available whenever any is. So the
    /// members in use are always a prefix of the class.
    class_used: Vec<usize>,
    state: State,
    shadows: Vec<Shadow>,
    stack: Vec<Applied>,
    failed: FailedConfigs,
    longest: Option<Stuck>,
    /// Scratch space for cache keys, see [`build_key`].
    key: Vec<u64>,
}

impl<'k, 'h> Search<'k, 'h> {
    fn new(history: &'k KeyHistory<'h>) -> Self {
        let mut unknown_slot = Vec::with_capacity(history.ops.len());
        let mut unknown_total = 0;
        for op in &history.ops {
            unknown_slot.push(unknown_total);
            if !op.is_completed() {
                unknown_total += 1;
            }
        }
        Search {
            history,
            list: EventList::new(history),
            unknown_slot,
            completed_total: history.ops.len() - unknown_total,
            completed_linearized: 0,
            unknown_used: vec![0; unknown_total.div_ceil(64)],
            class_used: vec![
                0;
                history
                    .symmetry
                    .iter()
                    .flatten()
                    .map(|&(class, _)| class + 1)
                    .max()
                    .unwrap_or(0)
            ],
            state: None,
            shadows: Vec::new(),
            stack: Vec::new(),
            failed: FailedConfigs {
                unknown_sets: HashMap::new(),
            },
            longest: None,
            key: Vec::new(),
        }
    }

    fn op_at(&self, node: usize) -> Option<&'k KeyOp<'h>> {
        self.list
            .op
            .get(node)
            .and_then(|&index| self.history.ops.get(index))
    }

    fn run(&mut self, max_steps: u64) -> SearchOutcome {
        if self.completed_total == 0 {
            // Unknown outcomes can all be placed after everything else.
            return SearchOutcome::Linearizable;
        }
        let mut node = self.list.next[COMPLETED_HEAD];
        // `Some(deadline)` once the completed candidates of the current
        // configuration are exhausted and the unknown ones are being tried.
        let mut unknown_pass: Option<usize> = None;
        let mut steps: u64 = 0;

        loop {
            if steps >= max_steps {
                return SearchOutcome::BudgetExhausted {
                    longest_prefix: self.longest.as_ref().map_or(0, |stuck| stuck.prefix.len()),
                };
            }
            steps += 1;

            let exhausted = match unknown_pass {
                // Unreachable: while a completed operation is unlinearized
                // its return is in the chain, and the walk stops there.
                None if node == NIL => return SearchOutcome::Linearizable,
                None if !self.list.is_call(node) => {
                    // The deadline: switch to the unknown outcomes called before it.
                    unknown_pass = Some(node);
                    node = self.list.next[UNKNOWN_HEAD];
                    continue;
                }
                None => false,
                Some(deadline) => node == NIL || self.list.rank[node] > self.list.rank[deadline],
            };

            if !exhausted {
                if self.try_apply(node, unknown_pass) {
                    if self.completed_linearized == self.completed_total {
                        // Remaining unknown outcomes go at the end (or never
                        // happened); either way they fit.
                        return SearchOutcome::Linearizable;
                    }
                    node = self.list.next[COMPLETED_HEAD];
                    unknown_pass = None;
                } else {
                    node = self.list.next[node];
                }
                continue;
            }

            // Every candidate of this configuration was tried: it failed.
            let blocking = unknown_pass.map_or(NIL, |deadline| self.list.op[deadline]);
            self.note_stuck(blocking);
            build_key(&self.list, &mut self.key, None, self.state, &self.shadows);
            self.failed.insert(&self.key, &self.unknown_used);
            match self.undo() {
                Some((resume_at, pass)) => {
                    node = resume_at;
                    unknown_pass = pass;
                }
                None => {
                    return SearchOutcome::Violation(self.longest.take().unwrap_or(Stuck {
                        prefix: Vec::new(),
                        blocking,
                    }))
                }
            }
        }
    }

    /// Linearizes the operation called at `node` next if its output fits,
    /// the shadows allow it and no failed configuration dominates the result.
    fn try_apply(&mut self, node: usize, unknown_pass: Option<usize>) -> bool {
        let Some(op) = self.op_at(node) else {
            return false;
        };
        let op_index = self.list.op[node];
        let symmetry = self.history.symmetry.get(op_index).copied().flatten();
        if let Some((class, position)) = symmetry {
            if self.class_used.get(class) != Some(&position) {
                return false; // an earlier interchangeable one is unused
            }
        }
        let Some(new_state) = op.step(self.state) else {
            return false;
        };
        let slot = self.unknown_slot.get(op_index).copied().unwrap_or(0);

        let mut new_shadows = Vec::with_capacity(self.shadows.len() + 1);
        for shadow in &self.shadows {
            match op.step(shadow.state) {
                // The output tells the states apart: the unknown outcome
                // behind this shadow has been observed.
                None => {}
                Some(shadow_state) if shadow_state == new_state => return false,
                Some(shadow_state) => new_shadows.push(Shadow {
                    unknown_slot: shadow.unknown_slot,
                    state: shadow_state,
                }),
            }
        }
        if !op.is_completed() {
            if new_state == self.state {
                return false; // changes nothing, so nothing could observe it
            }
            // Kept sorted by slot so that equal sets give equal keys.
            let position = new_shadows.partition_point(|shadow| shadow.unknown_slot < slot);
            new_shadows.insert(
                position,
                Shadow {
                    unknown_slot: slot,
                    state: self.state,
                },
            );
        }

        if !op.is_completed() {
            set_bit(&mut self.unknown_used, slot, true);
        }
        let lifted = op.is_completed().then_some(node);
        let (without_shadows, _) =
            build_key(&self.list, &mut self.key, lifted, new_state, &new_shadows);
        if self
            .failed
            .dominates(&self.key, without_shadows, &self.unknown_used)
        {
            if !op.is_completed() {
                set_bit(&mut self.unknown_used, slot, false);
            }
            return false;
        }

        self.stack.push(Applied {
            call: node,
            state_before: self.state,
            unknown_pass_before: unknown_pass,
            shadows_before: std::mem::replace(&mut self.shadows, new_shadows),
        });
        self.state = new_state;
        if op.is_completed() {
            self.completed_linearized += 1;
        }
        if let Some(used) = symmetry.and_then(|(class, _)| self.class_used.get_mut(class)) {
            *used += 1;
        }
        self.list.lift(node);
        true
    }

    /// Undoes the most recent choice; returns where to resume, or `None`
    /// if there is nothing left to undo.
    fn undo(&mut self) -> Option<(usize, Option<usize>)> {
        let applied = self.stack.pop()?;
        if let Some(op) = self.op_at(applied.call) {
            if op.is_completed() {
                self.completed_linearized -= 1;
            } else {
                let op_index = self.list.op[applied.call];
                let slot = self.unknown_slot.get(op_index).copied();
                set_bit(&mut self.unknown_used, slot.unwrap_or(0), false);
                let symmetry = self.history.symmetry.get(op_index).copied().flatten();
                if let Some(used) = symmetry.and_then(|(class, _)| self.class_used.get_mut(class)) {
                    *used -= 1;
                }
            }
        }
        self.state = applied.state_before;
        self.shadows = applied.shadows_before;
        self.list.unlift(applied.call);
        Some((self.list.next[applied.call], applied.unknown_pass_before))
    }

    /// Remembers the current path if it is the longest dead end so far.
    fn note_stuck(&mut self, blocking: usize) {
        if self
            .longest
            .as_ref()
            .is_some_and(|stuck| self.stack.len() <= stuck.prefix.len())
        {
            return;
        }
        self.longest = Some(Stuck {
            prefix: self
                .stack
                .iter()
                .map(|applied| self.list.op[applied.call])
                .collect(),
            blocking,
        });
    }
}

/// Writes into `key` the cache key of the configuration with the current
/// completed set plus `lifted` (a completed call about to be linearized),
/// `state` and `shadows` (sorted by slot). Returns the length of the key
/// without and with the shadows; the former is a prefix of the latter.
///
/// The completed set is encoded compactly as the deadline (the first
/// unlinearized return) and the unlinearized calls before it: every
/// completed operation returning earlier is linearized and none called
/// later is, so this determines the set, in space proportional to the
/// concurrency rather than to the history.
fn build_key(
    list: &EventList,
    key: &mut Vec<u64>,
    lifted: Option<usize>,
    state: State,
    shadows: &[Shadow],
) -> (usize, usize) {
    let skip_return = lifted.map_or(NIL, |call| list.matching_return[call]);
    key.clear();
    key.push(0); // number of calls, filled in below
    key.push(0); // deadline, filled in below
    let mut node = list.next[COMPLETED_HEAD];
    while node != NIL {
        if Some(node) != lifted && node != skip_return {
            if !list.is_call(node) {
                break;
            }
            key.push(node as u64);
        }
        node = list.next[node];
    }
    key[0] = (key.len() - 2) as u64;
    key[1] = node as u64;
    key.push(state_word(state));
    let without_shadows = key.len();
    for shadow in shadows {
        key.push(shadow.unknown_slot as u64);
        key.push(state_word(shadow.state));
    }
    (without_shadows, key.len())
}
