//! A picture of a linearizability violation: a self-contained HTML page with an SVG timeline of
//! the failing key's operations, one lane per process, in the spirit of Porcupine's visualizer.
//!
//! Each operation is a bar from invocation to completion (to the right edge when its outcome is
//! unknown). Operations of the longest linearizable prefix are green and numbered in the order
//! the search placed them; the operations that could not be placed after it are red; the rest
//! are grey. The picture shows the window where the search got stuck: from the last few placed
//! operations to the completion of the stuck ones.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::linearizability::{Counterexample, Operation};

const WIDTH: f64 = 1000.0;
const LANE: f64 = 34.0;
const MARGIN: f64 = 90.0;
/// How many of the last placed operations the window reaches back to.
const CONTEXT: usize = 8;
/// Bars narrower than this carry no label (hover shows it).
const LABEL_WIDTH: f64 = 60.0;

/// The time window to draw: the last `CONTEXT` placed operations and the stuck ones.
fn window(counterexample: &Counterexample) -> (u64, u64) {
    let prefix = &counterexample.longest_prefix;
    let focus: Vec<&Operation> = prefix[prefix.len().saturating_sub(CONTEXT)..]
        .iter()
        .chain(&counterexample.stuck)
        .collect();
    let start = focus.iter().map(|o| o.call).min().unwrap_or(0);
    let end = focus
        .iter()
        .flat_map(|o| [o.call, o.ret])
        .filter(|&t| t != u64::MAX)
        .max()
        .unwrap_or(start);
    (start, end.max(start + 1))
}

/// Renders `counterexample` as an HTML page.
pub fn html(counterexample: &Counterexample) -> String {
    let (start, end) = window(counterexample);
    let ops: Vec<&Operation> = counterexample
        .operations
        .iter()
        .filter(|o| o.call <= end && o.ret >= start)
        .collect();
    let lanes: BTreeMap<u64, usize> = ops
        .iter()
        .map(|o| o.process)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(lane, process)| (process, lane))
        .collect();
    let x = |t: u64| MARGIN + (t.clamp(start, end) - start) as f64 / (end - start) as f64 * WIDTH;
    let order: BTreeMap<usize, usize> = counterexample
        .longest_prefix
        .iter()
        .enumerate()
        .map(|(position, op)| (op.index, position + 1))
        .collect();
    let stuck: BTreeSet<usize> = counterexample.stuck.iter().map(|o| o.index).collect();
    let height = LANE * lanes.len() as f64 + 40.0;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="monospace" font-size="11">"#,
        WIDTH + MARGIN + 20.0
    );
    for (process, lane) in &lanes {
        let y = 20.0 + LANE * *lane as f64;
        let _ = write!(
            svg,
            r##"<text x="4" y="{}">process {process}</text><line x1="{MARGIN}" x2="{}" y1="{}" y2="{}" stroke="#ddd"/>"##,
            y + 14.0,
            MARGIN + WIDTH,
            y + 24.0,
            y + 24.0
        );
    }
    for &op in &ops {
        let y = 20.0 + LANE * lanes[&op.process] as f64;
        let (x1, x2) = (x(op.call), x(op.ret).max(x(op.call) + 3.0));
        let (fill, label) = if stuck.contains(&op.index) {
            ("#e74c3c", "cannot be placed".to_string())
        } else if let Some(position) = order.get(&op.index) {
            (
                "#2ecc71",
                format!("#{position} in the longest linearizable prefix"),
            )
        } else {
            ("#bdc3c7", "not reached".to_string())
        };
        let dash = if op.output.is_none() {
            r#" stroke-dasharray="4 2""#
        } else {
            ""
        };
        let text = if x2 - x1 >= LABEL_WIDTH {
            // About 6.6 px a character at 11 px monospace: keep the label inside its bar.
            let fits = ((x2 - x1 - 4.0) / 6.6) as usize;
            let label: String = short(op).chars().take(fits).collect();
            format!(
                r#"<text x="{:.1}" y="{}">{}</text>"#,
                x1 + 2.0,
                y + 14.0,
                escape(&label)
            )
        } else {
            String::new()
        };
        let _ = write!(
            svg,
            r##"<g><title>{}</title><rect x="{x1:.1}" y="{y}" width="{:.1}" height="20" fill="{fill}" stroke="#555"{dash}/>{text}</g>"##,
            escape(&format!("{} — {label}", describe(op))),
            x2 - x1,
        );
    }
    svg.push_str("</svg>");

    let key = counterexample.key.as_deref().unwrap_or("(single object)");
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Not linearizable: key {key}</title></head>
<body style="font-family: sans-serif">
<h1>Not linearizable: key {key}</h1>
<p>{count} operations on this key; {shown} of them overlap the window drawn, from time {start}
to {end}. Green: the longest linearizable prefix the search found, numbered in
order. Red: the operations that could not be placed after it. Dashed: outcome unknown (may take effect
any time after its invocation). Hover a bar for the whole operation.</p>
{svg}
</body></html>
"#,
        key = escape(key),
        count = counterexample.operations.len(),
        shown = ops.len(),
    )
}

fn describe(op: &Operation) -> String {
    format!(
        "process {} {} {} -> {} (invoked {}, completed {})",
        op.process,
        op.f,
        op.input,
        op.output
            .as_ref()
            .map_or("?".to_string(), |o| o.to_string()),
        op.call,
        if op.ret == u64::MAX {
            "never".to_string()
        } else {
            op.ret.to_string()
        }
    )
}

fn short(op: &Operation) -> String {
    let output = op
        .output
        .as_ref()
        .map_or("?".to_string(), |o| o.to_string());
    let text = match op.f.as_str() {
        "read" | "get" => format!("{} {output}", op.f),
        _ => format!("{} {}", op.f, op.input),
    };
    text
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType, History, Op};
    use crate::linearizability::{check, Verdict};
    use crate::model::RegisterModel;
    use serde_json::{json, Value as Json};

    #[test]
    fn a_stale_read_is_drawn_red_after_the_green_prefix() {
        let event = |process, kind, f: &str, value: Json, time| Op {
            process,
            kind,
            f: f.into(),
            key: Some("x<y".into()),
            value,
            time,
        };
        let history = History {
            events: vec![
                event(0, EventType::Invoke, "write", json!(1), 0),
                event(0, EventType::Ok, "write", json!(1), 10),
                event(1, EventType::Invoke, "read", Json::Null, 20),
                event(1, EventType::Ok, "read", Json::Null, 30),
            ],
        };
        let Verdict::NotLinearizable(counterexample) =
            check(&history, &RegisterModel, None).unwrap().verdict
        else {
            panic!("a stale read is not linearizable");
        };
        let page = html(&counterexample);
        assert!(page.contains("<svg"));
        assert!(page.contains("key x&lt;y"), "keys are escaped");
        assert_eq!(
            page.matches(r##"fill="#e74c3c""##).count(),
            1,
            "one red operation"
        );
        assert_eq!(
            page.matches(r##"fill="#2ecc71""##).count(),
            1,
            "one green operation"
        );
        assert!(page.contains("#1 in the longest linearizable prefix"));
    }
}
