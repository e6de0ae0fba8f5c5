//! Readers for histories recorded by other tools: Jepsen's EDN operation maps and Jepsen's
//! console log lines. Both become a [`History`]; a malformed line is rejected with its number.
//!
//! EDN (one map a line): `{:process 0, :type :invoke, :f :write, :key "x", :value 3}`.
//! Missing `:time` means "ordered by line": the line number becomes the time.
//!
//! Console log: `INFO  jepsen.util - 3\t:invoke\t:cas\t[1 2]` (tabs or spaces). A
//! `:fail :read :timed-out` is an unknown outcome and is read as `info`.

use std::io::BufRead;

use serde_json::{Map, Number, Value as Json};

use crate::history::{EventType, History, HistoryError, Op};

/// Reads one EDN operation map a line.
pub fn read_edn(reader: impl BufRead) -> Result<History, HistoryError> {
    read_lines(reader, |text| {
        let value = Edn::new(text).parse_top()?;
        let Json::Object(map) = value else {
            return Err("expected a map like {:process 0, :type :invoke, ...}".into());
        };
        op_from_map(&map)
    })
}

/// Reads Jepsen console log lines (`INFO  jepsen.util - <process> <type> <f> <value>`).
/// Lines without `jepsen.util -` are skipped.
pub fn read_jepsen_log(reader: impl BufRead) -> Result<History, HistoryError> {
    read_lines(reader, |text| {
        let Some((_, rest)) = text.split_once("jepsen.util -") else {
            return Ok(None);
        };
        let mut fields = rest.split_whitespace();
        let mut next = |what: &str| fields.next().ok_or_else(|| format!("missing {what}"));
        let process = next("process")?;
        let process: u64 = process
            .parse()
            .map_err(|_| format!("bad process '{process}'"))?;
        let kind = event_type(next("type")?.trim_start_matches(':'))?;
        let f = next("function")?.trim_start_matches(':').to_string();
        let rest: Vec<&str> = fields.collect();
        let value = match rest.join(" ").as_str() {
            "" => Json::Null,
            text => Edn::new(text).parse_top()?,
        };
        let kind = if kind == EventType::Fail && value == Json::String("timed-out".into()) {
            EventType::Info
        } else {
            kind
        };
        Ok(Some(Op {
            process,
            kind,
            f,
            key: None,
            value,
            time: 0,
        }))
    })
}

fn read_lines(
    reader: impl BufRead,
    mut parse: impl FnMut(&str) -> Result<Option<Op>, String>,
) -> Result<History, HistoryError> {
    let mut history = History::default();
    for (number, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op = parse(&line).map_err(|message| HistoryError::Malformed {
            line: number + 1,
            message,
        })?;
        if let Some(mut op) = op {
            if op.time == 0 {
                op.time = number as u64 + 1;
            }
            history.push(op);
        }
    }
    Ok(history)
}

fn event_type(text: &str) -> Result<EventType, String> {
    match text {
        "invoke" => Ok(EventType::Invoke),
        "ok" => Ok(EventType::Ok),
        "fail" => Ok(EventType::Fail),
        "info" => Ok(EventType::Info),
        other => Err(format!(
            "unknown type '{other}' (expected invoke, ok, fail or info)"
        )),
    }
}

fn op_from_map(map: &Map<String, Json>) -> Result<Option<Op>, String> {
    let process = match map.get("process") {
        Some(Json::Number(n)) => n.as_u64().ok_or("process must be a non-negative integer")?,
        // Jepsen's nemesis has process :nemesis; its events are not client operations.
        Some(Json::String(_)) => return Ok(None),
        _ => return Err("missing :process".into()),
    };
    let kind = match map.get("type") {
        Some(Json::String(s)) => event_type(s)?,
        _ => return Err("missing :type".into()),
    };
    let f = match map.get("f") {
        Some(Json::String(s)) => s.clone(),
        _ => return Err("missing :f".into()),
    };
    let key = match map.get("key") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let time = map.get("time").and_then(Json::as_u64).unwrap_or(0);
    let value = map.get("value").cloned().unwrap_or(Json::Null);
    Ok(Some(Op {
        process,
        kind,
        f,
        key,
        value,
        time,
    }))
}

/// A parser for the EDN subset Jepsen histories use: maps, vectors, lists, keywords, strings,
/// integers, floats, `nil`, `true`, `false`. Keywords become strings without the colon.
struct Edn<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Edn<'a> {
    fn new(text: &'a str) -> Self {
        Edn {
            text: text.as_bytes(),
            at: 0,
        }
    }

    fn parse_top(&mut self) -> Result<Json, String> {
        let value = self.parse()?;
        self.skip_space();
        if self.at != self.text.len() {
            return Err(format!(
                "unexpected text after value at column {}",
                self.at + 1
            ));
        }
        Ok(value)
    }

    fn skip_space(&mut self) {
        while self.at < self.text.len()
            && (self.text[self.at].is_ascii_whitespace() || self.text[self.at] == b',')
        {
            self.at += 1;
        }
    }

    fn parse(&mut self) -> Result<Json, String> {
        self.skip_space();
        let Some(&first) = self.text.get(self.at) else {
            return Err("unexpected end of line".into());
        };
        match first {
            b'{' => self.parse_map(),
            b'[' => self.parse_sequence(b']'),
            b'(' => self.parse_sequence(b')'),
            b'"' => self.parse_string().map(Json::String),
            _ => self.parse_atom(),
        }
    }

    fn parse_map(&mut self) -> Result<Json, String> {
        self.at += 1;
        let mut map = Map::new();
        loop {
            self.skip_space();
            match self.text.get(self.at) {
                None => return Err("unterminated map".into()),
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Object(map));
                }
                Some(_) => {
                    let key = match self.parse()? {
                        Json::String(s) => s,
                        other => other.to_string(),
                    };
                    let value = self.parse()?;
                    map.insert(key, value);
                }
            }
        }
    }

    fn parse_sequence(&mut self, close: u8) -> Result<Json, String> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.skip_space();
            match self.text.get(self.at) {
                None => return Err("unterminated vector".into()),
                Some(&c) if c == close => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                Some(_) => items.push(self.parse()?),
            }
        }
    }

    fn parse_string(&mut self) -> Result<String, String> {
        self.at += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.text.get(self.at) {
            self.at += 1;
            match c {
                b'"' => return String::from_utf8(out).map_err(|_| "string is not UTF-8".into()),
                b'\\' => {
                    let escaped = *self.text.get(self.at).ok_or("unterminated string")?;
                    self.at += 1;
                    out.push(match escaped {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        other => other,
                    });
                }
                other => out.push(other),
            }
        }
        Err("unterminated string".into())
    }

    fn parse_atom(&mut self) -> Result<Json, String> {
        let start = self.at;
        while let Some(&c) = self.text.get(self.at) {
            if c.is_ascii_whitespace()
                || matches!(c, b',' | b'}' | b']' | b')' | b'{' | b'[' | b'(')
            {
                break;
            }
            self.at += 1;
        }
        let atom =
            std::str::from_utf8(&self.text[start..self.at]).map_err(|_| "atom is not UTF-8")?;
        Ok(match atom {
            "nil" => Json::Null,
            "true" => Json::Bool(true),
            "false" => Json::Bool(false),
            keyword if keyword.starts_with(':') && keyword.len() > 1 => {
                Json::String(keyword[1..].to_string())
            }
            number => {
                if let Ok(integer) = number.parse::<i64>() {
                    Json::Number(integer.into())
                } else if let Some(float) = number.parse::<f64>().ok().and_then(Number::from_f64) {
                    Json::Number(float)
                } else {
                    return Err(format!("cannot read '{number}' at column {}", start + 1));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_edn_maps() {
        let text = "{:process 0, :type :invoke, :f :write, :value 3}\n{:process 0, :type :ok, :f :append, :key \"k\", :value \"x 0 y\"}\n";
        let h = read_edn(text.as_bytes()).unwrap();
        assert_eq!(h.events[0].f, "write");
        assert_eq!(h.events[0].value, json!(3));
        assert_eq!(h.events[1].key.as_deref(), Some("k"));
        assert_eq!(h.events[1].value, json!("x 0 y"));
        assert_eq!(h.events[1].time, 2);
    }

    #[test]
    fn reads_jepsen_console_lines() {
        let text = "INFO  jepsen.util - 4\t:invoke\t:cas\t[1 2]\nINFO  jepsen.util - 4   :fail :read  :timed-out\n";
        let h = read_jepsen_log(text.as_bytes()).unwrap();
        assert_eq!(h.events[0].value, json!([1, 2]));
        assert_eq!(h.events[1].kind, EventType::Info);
    }

    #[test]
    fn malformed_input_names_its_line() {
        let err = read_edn("{:process 0, :type :invoke, :f :read}\n{:process 1 :type\n".as_bytes())
            .unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
        let err = read_jepsen_log("INFO  jepsen.util - x :ok :read 1\n".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
