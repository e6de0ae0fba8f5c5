//! Histories: invocations and completions of client operations, in Jepsen's shape.
//!
//! One JSON object per line:
//!
//! ```text
//! {"process":3,"type":"invoke","f":"write","key":"x","value":5,"time":1200}
//! {"process":3,"type":"ok","f":"write","key":"x","value":5,"time":1900}
//! ```
//!
//! `type` is `invoke`, `ok`, `fail` (definitely did not happen) or `info` (outcome unknown);
//! `time` is nanoseconds of simulated or real time; `key` is omitted for single-object histories.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// The kind of a history event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The operation started.
    Invoke,
    /// The operation completed and took effect.
    Ok,
    /// The operation definitely did not take effect.
    Fail,
    /// The outcome is unknown: it may take effect at any time after its invocation.
    Info,
}

/// One event of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// The client process; a process runs one operation at a time.
    pub process: u64,
    /// Invoke, ok, fail or info.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The function: `read`, `write`, `cas`, `append`, ...
    pub f: String,
    /// The key, for multi-object histories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The argument or result: a write's value, a cas's `[from, to]`, a read's result.
    #[serde(default)]
    pub value: serde_json::Value,
    /// Nanoseconds of simulated or real time.
    pub time: u64,
}

/// A history: events in the order they happened.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The events, in time order.
    pub events: Vec<Op>,
}

/// A history that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A line is not a valid history event.
    #[error("line {line}: {message}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The input could not be read.
    #[error("cannot read history: {0}")]
    Io(#[from] std::io::Error),
}

impl History {
    /// Appends one event.
    pub fn push(&mut self, op: Op) {
        self.events.push(op);
    }

    /// Reads JSON lines; blank lines are skipped.
    pub fn read_jsonl(reader: impl BufRead) -> Result<History, HistoryError> {
        let mut history = History::default();
        for (number, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let op: Op = serde_json::from_str(&line).map_err(|e| HistoryError::Malformed {
                line: number + 1,
                message: e.to_string(),
            })?;
            history.events.push(op);
        }
        Ok(history)
    }

    /// Writes JSON lines.
    pub fn write_jsonl(&self, mut writer: impl Write) -> std::io::Result<()> {
        for op in &self.events {
            serde_json::to_writer(&mut writer, op)?;
            writer.write_all(b"\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_jsonl() {
        let text = "{\"process\":3,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"x\",\"value\":5,\"time\":1200}\n\
                    {\"process\":3,\"type\":\"ok\",\"f\":\"write\",\"key\":\"x\",\"value\":5,\"time\":1900}\n";
        let history = History::read_jsonl(text.as_bytes()).unwrap();
        assert_eq!(history.events.len(), 2);
        assert_eq!(history.events[1].kind, EventType::Ok);
        let mut out = Vec::new();
        history.write_jsonl(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }

    #[test]
    fn malformed_lines_name_their_number() {
        let text = "{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"time\":1}\n\n{\"process\":1,\"type\":\"maybe\"}\n";
        let error = History::read_jsonl(text.as_bytes()).unwrap_err();
        assert!(error.to_string().starts_with("line 3:"), "{error}");
    }
}
