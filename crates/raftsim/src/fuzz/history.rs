//! The clients' view of a randomized run: every key-value operation with the step it was issued
//! at and the step its outcome appeared, turned into a `lincheck` history.

use crate::cluster::{Cluster, CommandOutcome};
use crate::counter::NIL;
use lincheck::{KvInput, KvOutput, Operation};
use raftengine::RequestId;

#[derive(Debug, Clone)]
struct ClientOp {
    node: usize,
    request: RequestId,
    input: KvInput,
    call: u64,
    ret: Option<u64>,
    output: Option<KvOutput>,
    /// Refused before it could take effect (redirect, retry): not part of the history.
    no_effect: bool,
}

/// Operations in the order they were issued.
#[derive(Debug, Default)]
pub struct History {
    ops: Vec<ClientOp>,
}

impl History {
    pub fn issued(&mut self, node: usize, request: RequestId, input: KvInput, step: u64) {
        self.ops.push(ClientOp {
            node,
            request,
            input,
            call: step,
            ret: None,
            output: None,
            no_effect: false,
        });
    }

    /// Records outcomes that appeared by `step`.
    pub fn poll(&mut self, cluster: &Cluster, step: u64) {
        for op in self
            .ops
            .iter_mut()
            .filter(|o| o.ret.is_none() && !o.no_effect)
        {
            let Ok(outcome) = cluster.outcome(op.node, op.request) else {
                continue;
            };
            match outcome {
                CommandOutcome::Pending => {}
                CommandOutcome::Value(value) => {
                    op.ret = Some(step);
                    op.output = Some(output_for(&op.input, &value));
                }
                CommandOutcome::Redirect(_) | CommandOutcome::Retry => op.no_effect = true,
                // The outcome will never be known: it may or may not have taken effect.
                CommandOutcome::LeadershipLost
                | CommandOutcome::Timeout
                | CommandOutcome::Error(_) => {
                    op.ret = Some(step);
                    op.output = None;
                }
            }
        }
    }

    /// The node crashed: its clients lost the connection, so every operation still waiting
    /// there has an unknown outcome.
    pub fn node_crashed(&mut self, node: usize, step: u64) {
        for op in self
            .ops
            .iter_mut()
            .filter(|o| o.node == node && o.ret.is_none() && !o.no_effect)
        {
            op.ret = Some(step);
            op.output = None;
        }
    }

    /// The operations still waiting, described (for debugging a failure).
    pub fn describe_pending(&self) -> Vec<String> {
        self.ops
            .iter()
            .filter(|o| o.ret.is_none() && !o.no_effect)
            .map(|o| {
                format!(
                    "{:?} at N-{} (request {}, step {})",
                    o.input, o.node, o.request.0, o.call
                )
            })
            .collect()
    }

    /// Operations still waiting for an outcome: (node, request).
    pub fn pending(&self) -> Vec<(usize, RequestId)> {
        self.ops
            .iter()
            .filter(|o| o.ret.is_none() && !o.no_effect)
            .map(|o| (o.node, o.request))
            .collect()
    }

    /// Whether the operation issued as `request` at `node` is still waiting.
    pub fn is_pending(&self, node: usize, request: RequestId) -> bool {
        self.ops
            .iter()
            .any(|o| o.node == node && o.request == request && o.ret.is_none() && !o.no_effect)
    }

    /// Whether the operation was refused before it could take effect (redirect, retry).
    pub fn had_no_effect(&self, node: usize, request: RequestId) -> bool {
        self.ops
            .iter()
            .any(|o| o.node == node && o.request == request && o.no_effect)
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The operations for the checker: completed ones with their outputs, the others with an
    /// unknown outcome (no output, no return).
    pub fn operations(&self) -> Vec<Operation> {
        self.ops
            .iter()
            .filter(|o| !o.no_effect)
            .enumerate()
            .map(|(id, o)| Operation {
                id: id as u64,
                client: o.node as u64,
                call: o.call,
                ret: if o.output.is_some() { o.ret } else { None },
                input: o.input.clone(),
                output: o.output.clone(),
            })
            .collect()
    }
}

fn output_for(input: &KvInput, value: &str) -> KvOutput {
    match input {
        KvInput::Get { .. } => KvOutput::Get {
            value: (value != NIL).then(|| value.to_string()),
        },
        KvInput::Put { .. } => KvOutput::Put,
        KvInput::Delete { .. } => KvOutput::Delete {
            existed: value == "1",
        },
        KvInput::Cas { .. } => KvOutput::Cas {
            swapped: value == "1",
        },
    }
}
