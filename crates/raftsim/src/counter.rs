//! The simulator's state machine: the seed's counter (`add N`, `sub N` on one total) and a small
//! key-value map for randomized runs (`put K V`, `del K`, `cas K EXPECTED NEW`).

use raftengine::{ApplyError, LogIndex, StateMachine};
use std::collections::BTreeMap;

/// The word that stands for "absent" in `cas` (keys and values are single words).
pub const NIL: &str = "nil";

/// Holds one integer total and a map. Commands are text: `add N`, `sub N`, `get`, `put K V`,
/// `del K`, `cas K EXPECTED NEW` (EXPECTED `nil`: the key must be absent); anything else is a
/// deterministic error. `fail-io` simulates a non-deterministic failure (a broken disk under the
/// state machine) so tests can exercise the "broken log" path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counter {
    pub total: i64,
    pub applied: LogIndex,
    pub map: BTreeMap<String, String>,
}

impl Counter {
    /// The snapshot of the state: the total, then `key value` lines.
    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!("{}\n", self.total);
        for (k, v) in &self.map {
            text.push_str(&format!("{k} {v}\n"));
        }
        text.into_bytes()
    }

    /// The state a snapshot describes, applied up to `applied`.
    pub fn restore(data: &[u8], applied: LogIndex) -> Counter {
        let text = String::from_utf8_lossy(data);
        let mut lines = text.lines();
        let total = lines.next().and_then(|t| t.parse().ok()).unwrap_or(0);
        let map = lines
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Counter {
            total,
            applied,
            map,
        }
    }

    /// The value of `key`, or `nil`.
    pub fn get(&self, key: &str) -> String {
        self.map
            .get(key)
            .cloned()
            .unwrap_or_else(|| NIL.to_string())
    }
}

impl StateMachine for Counter {
    fn snapshot(&self) -> Vec<u8> {
        self.encode()
    }

    fn restore_from(&mut self, snapshot: &[u8]) -> Result<(), ApplyError> {
        *self = Counter::restore(snapshot, self.applied);
        Ok(())
    }

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
        let word = |i: usize| {
            text.split_whitespace()
                .nth(i)
                .map(str::to_string)
                .ok_or_else(|| ApplyError::Rejected(format!("`{verb}` needs more words")))
        };
        match verb {
            "add" => self.total = self.total.saturating_add(amount()?),
            "sub" => self.total = self.total.saturating_sub(amount()?),
            "get" => {}
            "put" => {
                self.map.insert(word(1)?, word(2)?);
                return Ok(b"OK".to_vec());
            }
            "del" => {
                let existed = self.map.remove(&word(1)?).is_some();
                return Ok(if existed {
                    b"1".to_vec()
                } else {
                    b"0".to_vec()
                });
            }
            "cas" => {
                let (key, expected, new) = (word(1)?, word(2)?, word(3)?);
                let current = self.get(&key);
                if current != expected {
                    return Ok(b"0".to_vec());
                }
                self.map.insert(key, new);
                return Ok(b"1".to_vec());
            }
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
