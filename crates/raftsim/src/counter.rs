//! The counter state machine of the seed: `add N` and `sub N` on one total.

use raftengine::{ApplyError, LogIndex, StateMachine};

/// Holds one integer total. Commands are text: `add N`, `sub N`, `get`; anything else is a
/// deterministic error. `fail-io` simulates a non-deterministic failure (a broken disk under the
/// state machine) so tests can exercise the "broken log" path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counter {
    pub total: i64,
    pub applied: LogIndex,
}

impl StateMachine for Counter {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Result<Vec<u8>, ApplyError> {
        self.applied = index;
        let text = std::str::from_utf8(command)
            .map_err(|_| ApplyError::Rejected("command is not UTF-8".into()))?;
        let mut words = text.split_whitespace();
        let verb = words.next().unwrap_or("");
        let amount = || -> Result<i64, ApplyError> {
            let arg = text.split_whitespace().nth(1).unwrap_or("");
            arg.parse()
                .map_err(|_| ApplyError::Rejected(format!("bad number '{arg}'")))
        };
        match verb {
            "add" => self.total = self.total.saturating_add(amount()?),
            "sub" => self.total = self.total.saturating_sub(amount()?),
            "get" => {}
            "fail-io" => return Err(ApplyError::Fatal("simulated I/O error".into())),
            _ => return Err(ApplyError::Rejected(format!("unknown command '{verb}'"))),
        }
        Ok(self.total.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_subtracts_and_rejects_unknown_commands() {
        let mut c = Counter::default();
        assert_eq!(c.apply(LogIndex(1), b"add 5").unwrap(), b"5");
        assert_eq!(c.apply(LogIndex(2), b"sub 2").unwrap(), b"3");
        assert!(matches!(
            c.apply(LogIndex(3), b"mul 2"),
            Err(ApplyError::Rejected(_))
        ));
        assert!(matches!(
            c.apply(LogIndex(4), b"add x"),
            Err(ApplyError::Rejected(_))
        ));
        assert!(matches!(
            c.apply(LogIndex(5), b"fail-io"),
            Err(ApplyError::Fatal(_))
        ));
        assert_eq!(c.total, 3);
    }
}
