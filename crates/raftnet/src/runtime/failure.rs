//! Why a node stops, and how the tasks around the raft loop report that they failed.
//!
//! A node is several tasks and threads: the raft loop, the apply task, the log writer thread,
//! blocking threads that save snapshots, the transport's accept loop and peer tasks. If any of
//! them dies or fails, the node must not carry on half alive (voting and acknowledging while it
//! can no longer apply or persist): each reports a [`Failure`] on a channel the raft loop
//! watches, and the loop stops the core ([`raftengine::RaftNode::fail`]), answers what it holds
//! and publishes the reason in [`NodeStatus::stopped`](super::NodeStatus::stopped).

use raftengine::LogIndex;
use std::any::Any;
use std::fmt;
use tokio::sync::mpsc;

/// A failure that stops the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The durable log could not write or sync, or its writer thread is gone.
    LogStorage(String),
    /// The state machine failed applying a committed entry (`ApplyError::Fatal`): its state may
    /// now differ from the other replicas', so the log is marked broken for an operator to check.
    StateMachine { index: LogIndex, reason: String },
    /// A task or thread of the node failed or died (a snapshot that cannot be saved, a panic).
    Task { task: &'static str, reason: String },
}

impl Failure {
    pub fn task(task: &'static str, reason: impl Into<String>) -> Failure {
        Failure::Task {
            task,
            reason: reason.into(),
        }
    }

    /// Whether a restart must wait for an operator: only when replicas may have diverged (a
    /// state machine that failed in a way others may not). An environmental failure (a full
    /// disk, a failed sync, a task that died) leaves the durable state as good as a crash would:
    /// the log recorded where its failed write lies and cuts it at the next open, so a restart
    /// once the cause is fixed is safe and needs no manual step.
    pub fn marks_log_broken(&self) -> bool {
        matches!(self, Failure::StateMachine { .. })
    }
}

impl Failure {
    /// What the core is told when the node stops for this failure.
    pub fn fatal_error(&self) -> raftengine::FatalError {
        match self {
            Failure::LogStorage(reason) => raftengine::FatalError::Storage {
                reason: reason.clone(),
            },
            Failure::StateMachine { index, reason } => raftengine::FatalError::StateMachine {
                index: *index,
                reason: reason.clone(),
            },
            Failure::Task { .. } => raftengine::FatalError::Driver {
                reason: self.to_string(),
            },
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::LogStorage(reason) => write!(f, "log storage failed: {reason}"),
            Failure::StateMachine { index, reason } => {
                write!(f, "state machine failed at index {index}: {reason}")
            }
            Failure::Task { task, reason } => write!(f, "{task} failed: {reason}"),
        }
    }
}

/// Where tasks report failures; cheap to clone. Reporting after the node stopped is harmless.
#[derive(Debug, Clone)]
pub(crate) struct FailureReporter(mpsc::UnboundedSender<Failure>);

impl FailureReporter {
    pub fn channel() -> (FailureReporter, mpsc::UnboundedReceiver<Failure>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (FailureReporter(tx), rx)
    }

    pub fn report(&self, failure: Failure) {
        tracing::error!("{failure}; stopping the node");
        let _ = self.0.send(failure);
    }

    /// Runs `task` on the runtime and reports a [`Failure::Task`] if it panics.
    pub fn spawn<F>(&self, name: &'static str, task: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        use futures_util::FutureExt;
        let reporter = self.clone();
        tokio::spawn(async move {
            if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
                reporter.report(Failure::task(name, panic_message(&*panic)));
            }
        })
    }
}

/// The text of a panic payload (a `&str` or a `String`, as `panic!` makes them).
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string());
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_storage_failures_say_so() {
        let failure = Failure::LogStorage("fdatasync: EIO".into());
        assert_eq!(failure.to_string(), "log storage failed: fdatasync: EIO");
        assert!(
            !failure.marks_log_broken(),
            "the log cuts its failed write itself at the next open"
        );
        let failure = Failure::StateMachine {
            index: raftengine::LogIndex(3),
            reason: "EIO under the store".into(),
        };
        assert!(failure.marks_log_broken());
        let failure = Failure::task("snapshot save", "ENOSPC");
        assert_eq!(failure.to_string(), "snapshot save failed: ENOSPC");
        assert!(!failure.marks_log_broken());
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported() {
        let (reporter, mut failures) = FailureReporter::channel();
        let task = reporter.spawn("apply task", async { panic!("boom") });
        task.await.expect("the wrapper itself does not panic");
        let failure = failures.recv().await.expect("a failure");
        assert_eq!(failure.to_string(), "apply task failed: panicked: boom");
    }
}
