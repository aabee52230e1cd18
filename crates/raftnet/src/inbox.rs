//! A node's inbox: the channel of messages it receives, bounded in messages *and* in the bytes
//! of the commands and snapshot data they carry, so that a node whose loop falls behind holds a
//! bounded amount of memory however large the values are. A message that does not fit is
//! dropped, as a lossy network would (Raft resends); one message always fits an empty inbox,
//! however large, so nothing is refused for good.

use raftengine::Message;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::mpsc;

/// A new inbox holding at most `capacity` messages and `max_bytes` payload bytes.
pub fn inbox(capacity: usize, max_bytes: usize) -> (InboxSender, Inbox) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    let sender = InboxSender {
        tx,
        bytes: bytes.clone(),
        max_bytes,
    };
    (sender, Inbox { rx, bytes })
}

/// Why a message was not put in an inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InboxFull {
    /// The inbox holds as many messages as its capacity allows.
    #[error("the inbox holds its most messages")]
    Messages,
    /// The message's payload would take the inbox over its byte bound.
    #[error("the inbox holds its most payload bytes")]
    Bytes,
    /// The receiving side ([`Inbox`]) was dropped: its node stopped.
    #[error("the inbox's node is gone")]
    Closed,
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone)]
pub struct InboxSender {
    tx: mpsc::Sender<Message>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl InboxSender {
    /// Room left, in messages.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// Puts `msg` in the inbox, or drops it when the inbox is full (in messages or in bytes).
    pub fn try_send(&self, msg: Message) -> Result<(), InboxFull> {
        let size = msg.payload_bytes();
        let held = self.bytes.fetch_add(size, Ordering::AcqRel);
        if held > 0 && held.saturating_add(size) > self.max_bytes {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(InboxFull::Bytes);
        }
        self.tx.try_send(msg).map_err(|e| {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => InboxFull::Messages,
                mpsc::error::TrySendError::Closed(_) => InboxFull::Closed,
            }
        })
    }
}

/// The receiving side: the node's loop.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Message>,
    bytes: Arc<AtomicUsize>,
}

impl Inbox {
    /// The next message; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Message> {
        let msg = self.rx.recv().await?;
        self.release(&msg);
        Some(msg)
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Message> {
        let msg = self.rx.try_recv().ok()?;
        self.release(&msg);
        Some(msg)
    }

    /// Payload bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    fn release(&self, msg: &Message) {
        self.bytes.fetch_sub(msg.payload_bytes(), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_messages::append;

    #[tokio::test]
    async fn an_inbox_holds_no_more_payload_bytes_than_its_bound() {
        let (tx, mut rx) = inbox(100, 1000);
        // One message always fits an empty inbox, however large.
        assert_eq!(tx.try_send(append(5000)), Ok(()));
        assert_eq!(tx.try_send(append(1)), Err(InboxFull::Bytes));
        assert_eq!(rx.held_bytes(), 5000);
        rx.recv().await.expect("the large one");
        assert_eq!(rx.held_bytes(), 0);
        for _ in 0..2 {
            assert_eq!(tx.try_send(append(400)), Ok(()));
        }
        assert_eq!(tx.try_send(append(400)), Err(InboxFull::Bytes));
        assert_eq!(rx.held_bytes(), 800);
        assert!(rx.try_recv().is_some());
        assert_eq!(tx.try_send(append(400)), Ok(()), "room again");
    }

    #[tokio::test]
    async fn an_inbox_holds_no_more_messages_than_its_capacity() {
        let (tx, rx) = inbox(2, usize::MAX);
        assert_eq!(tx.try_send(append(1)), Ok(()));
        assert_eq!(tx.try_send(append(1)), Ok(()));
        assert_eq!(tx.try_send(append(1)), Err(InboxFull::Messages));
        assert_eq!(rx.held_bytes(), 2, "a refused message is not counted");
        drop(rx);
        assert_eq!(tx.try_send(append(1)), Err(InboxFull::Closed));
    }
}
