//! Pictures of checked histories: a self-contained HTML page with an SVG timeline per key, one
//! lane per process, in the spirit of Porcupine's visualizer.
//!
//! Each operation is a bar from invocation to completion (to the right edge when its outcome is
//! unknown, dashed). Placed operations are green and numbered in the order the search placed
//! them, with a dot at a linearization point consistent with that order, joined by a line; the
//! operations that could not be placed are red, and a red line marks the time the search could
//! not get past; the rest are grey. Hovering an operation shows it and the model state after it
//! (an SVG `<title>` without script; an inline script fills a panel and numbers the drawn
//! operations with `data-op` once the page has loaded).
//!
//! * [`linearizability`]: a linearizable history with the order found (every key, up to
//!   [`MAX_OPERATIONS`] operations), or a violation: the failing key around where the search
//!   got stuck.
//! * [`sequential`]: a sequential consistency violation, the longest order found and the
//!   processes' next operations that cannot follow it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::history::History;
use crate::linearizability::{self, operations, Counterexample, MalformedHistory, Operation};
use crate::model::Model;
use crate::sequential;

const WIDTH: f64 = 1000.0;
const LANE: f64 = 34.0;
const MARGIN: f64 = 90.0;
/// How many of the last placed operations a violation's window reaches back to.
const CONTEXT: usize = 8;
/// Bars narrower than this carry no label (hover shows it).
const LABEL_WIDTH: f64 = 60.0;
/// The most operations drawn on one page; keys past it are left out (the page says so).
pub const MAX_OPERATIONS: usize = 2_000;

/// How one operation is drawn.
struct Bar<'a> {
    op: &'a Operation,
    /// Its number in the order found (from 1), if placed.
    position: Option<usize>,
    /// The time drawn as its linearization point, if placed.
    point: Option<u64>,
    /// It could not be placed after the order found.
    stuck: bool,
    /// The model state after it, if placed.
    state: Option<String>,
}

/// One SVG timeline: the operations of one key (or of the whole history) in a time window.
struct Timeline<'a> {
    caption: String,
    bars: Vec<Bar<'a>>,
    start: u64,
    end: u64,
    /// Where the search could not get past.
    fails_at: Option<u64>,
}

/// A page of the outcome of a linearizability check (see the module documentation).
pub fn linearizability<M: Model>(
    history: &History,
    model: &M,
    report: &linearizability::Report,
) -> Result<String, MalformedHistory> {
    Ok(match &report.verdict {
        linearizability::Verdict::NotLinearizable(counterexample) => {
            violation(counterexample, Some(model))
        }
        linearizability::Verdict::Linearizable => {
            let ops = operations(history)?;
            let by_index: BTreeMap<usize, &Operation> = ops.iter().map(|o| (o.index, o)).collect();
            let order: Vec<&Operation> = report
                .linearization
                .iter()
                .filter_map(|i| by_index.get(i).copied())
                .collect();
            let (timelines, left_out) = per_key(&ops, &order, model);
            page(
                "Linearizable",
                &format!(
                    "{} operations over {} keys; every one is placed. Green bars are numbered in the \
                     order the search linearized them (per key); the dots joined by a line are \
                     linearization points consistent with that order.{}",
                    report.operations,
                    report.parts,
                    left_out_note(left_out)
                ),
                &timelines,
            )
        }
        linearizability::Verdict::Unknown { reason } => {
            let ops = operations(history)?;
            let (timelines, left_out) = per_key(&ops, &[], model);
            page(
                "Linearizability unknown",
                &format!(
                    "The search did not finish ({reason}); the operations are drawn without an \
                     order.{}",
                    left_out_note(left_out)
                ),
                &timelines,
            )
        }
    })
}

/// A page of a linearizability violation without model states (see [`linearizability`]).
pub fn html(counterexample: &Counterexample) -> String {
    violation::<crate::model::RegisterModel>(counterexample, None)
}

/// A page of a sequential consistency violation: every operation (up to [`MAX_OPERATIONS`]),
/// one lane per process, the longest order found numbered, the operations that cannot follow it
/// red. Real time does not bind sequential consistency, so the numbered order may run against
/// the time axis; no linearization points are drawn. `None` when the history is sequentially
/// consistent.
pub fn sequential<M: Model>(
    history: &History,
    model: &M,
    report: &sequential::Report,
) -> Result<Option<String>, MalformedHistory> {
    let sequential::Verdict::NotSequentiallyConsistent(counterexample) = &report.verdict else {
        return Ok(None);
    };
    let ops = operations(history)?;
    let shown: Vec<&Operation> = ops.iter().take(MAX_OPERATIONS).collect();
    let prefix: Vec<&Operation> = counterexample.longest_prefix.iter().collect();
    let states = states_after(model, &prefix);
    let placed: BTreeMap<usize, (usize, String)> = prefix
        .iter()
        .zip(states)
        .enumerate()
        .map(|(position, (op, state))| (op.index, (position + 1, state)))
        .collect();
    let stuck: BTreeSet<usize> = counterexample.stuck.iter().map(|o| o.index).collect();
    let bars = shown
        .iter()
        .map(|&op| Bar {
            op,
            position: placed.get(&op.index).map(|(p, _)| *p),
            point: None,
            stuck: stuck.contains(&op.index),
            state: placed.get(&op.index).map(|(_, s)| s.clone()),
        })
        .collect();
    let (start, end) = span(&shown);
    let timeline = Timeline {
        caption: "the whole history".into(),
        bars,
        start,
        end,
        fails_at: None,
    };
    Ok(Some(page(
        "Not sequentially consistent",
        &format!(
            "{} operations of {} processes over {} keys. Green: the longest order the search \
             found that keeps every process's order and the model, numbered. Red: each process's \
             next operation, none of which can follow it.{}",
            report.operations,
            report.processes,
            report.keys,
            left_out_note(ops.len() - shown.len())
        ),
        &[timeline],
    )))
}

fn left_out_note(left_out: usize) -> String {
    if left_out == 0 {
        String::new()
    } else {
        format!(" {left_out} operations past the first {MAX_OPERATIONS} are not drawn.")
    }
}

/// One timeline per key, the operations in `order` numbered with their linearization points
/// and states; at most [`MAX_OPERATIONS`] operations in all. Returns how many were left out.
fn per_key<'a, M: Model>(
    ops: &'a [Operation],
    order: &[&'a Operation],
    model: &M,
) -> (Vec<Timeline<'a>>, usize) {
    let states = states_after(model, order);
    let mut placed: BTreeMap<usize, (usize, u64, String)> = BTreeMap::new();
    let mut positions: BTreeMap<&Option<String>, usize> = BTreeMap::new();
    let mut points: BTreeMap<&Option<String>, u64> = BTreeMap::new();
    for (op, state) in order.iter().zip(states) {
        let position = positions.entry(&op.key).or_insert(0);
        *position += 1;
        // The latest invocation so far: never after this operation's completion when the order
        // respects real time, and never before the previous point.
        let point = points.entry(&op.key).or_insert(0);
        *point = (*point).max(op.call);
        placed.insert(op.index, (*position, *point, state));
    }
    let mut keys: BTreeMap<&Option<String>, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        keys.entry(&op.key).or_default().push(op);
    }
    let mut timelines = Vec::new();
    let mut drawn = 0;
    for (key, ops) in keys {
        if drawn + ops.len() > MAX_OPERATIONS && drawn > 0 {
            break;
        }
        let ops = &ops[..ops.len().min(MAX_OPERATIONS)];
        drawn += ops.len();
        let (start, end) = span(ops);
        let bars = ops
            .iter()
            .map(|&op| {
                let placed = placed.get(&op.index);
                Bar {
                    op,
                    position: placed.map(|p| p.0),
                    point: placed.map(|p| p.1),
                    stuck: false,
                    state: placed.map(|p| p.2.clone()),
                }
            })
            .collect();
        timelines.push(Timeline {
            caption: key_name(key.as_deref()),
            bars,
            start,
            end,
            fails_at: None,
        });
    }
    (timelines, ops.len() - drawn)
}

/// A violation's page: the failing key around where the search got stuck.
fn violation<M: Model>(counterexample: &Counterexample, model: Option<&M>) -> String {
    let (start, end) = window(counterexample);
    let prefix: Vec<&Operation> = counterexample.longest_prefix.iter().collect();
    let states: Vec<Option<String>> = match model {
        Some(model) => states_after(model, &prefix).into_iter().map(Some).collect(),
        None => vec![None; prefix.len()],
    };
    let mut placed: BTreeMap<usize, (usize, u64, Option<String>)> = BTreeMap::new();
    let mut point = 0;
    for (position, (op, state)) in prefix.iter().zip(states).enumerate() {
        point = op.call.max(point);
        placed.insert(op.index, (position + 1, point, state));
    }
    let stuck: BTreeSet<usize> = counterexample.stuck.iter().map(|o| o.index).collect();
    let bars: Vec<Bar> = counterexample
        .operations
        .iter()
        .filter(|o| o.call <= end && o.ret >= start)
        .map(|op| {
            let placed = placed.get(&op.index);
            Bar {
                op,
                position: placed.map(|p| p.0),
                point: placed.map(|p| p.1),
                stuck: stuck.contains(&op.index),
                state: placed.and_then(|p| p.2.clone()),
            }
        })
        .collect();
    let fails_at = counterexample
        .stuck
        .iter()
        .map(|o| o.ret)
        .filter(|&t| t != u64::MAX)
        .min();
    let key = key_name(counterexample.key.as_deref());
    let shown = bars.len();
    let timeline = Timeline {
        caption: key.clone(),
        bars,
        start,
        end,
        fails_at,
    };
    page(
        &format!("Not linearizable: {key}"),
        &format!(
            "{count} operations on this key; {shown} of them overlap the window drawn, from time \
             {start} to {end}. Green: the longest linearizable prefix the search found, numbered \
             in order, with linearization points. Red: the operations that could not be placed \
             after it; the red line is the completion the search could not get past.",
            count = counterexample.operations.len(),
        ),
        &[timeline],
    )
}

/// The model state after each operation of `order`, applied in turn, each key on its own.
fn states_after<M: Model>(model: &M, order: &[&Operation]) -> Vec<String> {
    let mut states: BTreeMap<Option<String>, M::State> = BTreeMap::new();
    order
        .iter()
        .map(|op| {
            let state = states.entry(op.key.clone()).or_insert_with(|| model.init());
            match model.step(state, &op.f, &op.input, op.output.as_ref()) {
                Some(next) => {
                    *state = next;
                    format!("{state:?}")
                }
                None => "(the model rejects the operation here)".into(),
            }
        })
        .collect()
}

fn key_name(key: Option<&str>) -> String {
    match key {
        Some(key) => format!("key {key}"),
        None => "(single object)".into(),
    }
}

/// The first invocation and the last completion (or invocation) of `ops`.
fn span(ops: &[&Operation]) -> (u64, u64) {
    let start = ops.iter().map(|o| o.call).min().unwrap_or(0);
    let end = ops
        .iter()
        .flat_map(|o| [o.call, o.ret])
        .filter(|&t| t != u64::MAX)
        .max()
        .unwrap_or(start);
    (start, end.max(start + 1))
}

/// The time window of a violation: the last `CONTEXT` placed operations and the stuck ones.
fn window(counterexample: &Counterexample) -> (u64, u64) {
    let prefix = &counterexample.longest_prefix;
    let focus: Vec<&Operation> = prefix[prefix.len().saturating_sub(CONTEXT)..]
        .iter()
        .chain(&counterexample.stuck)
        .collect();
    span(&focus)
}

/// The SVG of one timeline.
fn svg(timeline: &Timeline) -> String {
    let (start, end) = (timeline.start, timeline.end);
    let lanes: BTreeMap<u64, usize> = timeline
        .bars
        .iter()
        .map(|b| b.op.process)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(lane, process)| (process, lane))
        .collect();
    let x = |t: u64| MARGIN + (t.clamp(start, end) - start) as f64 / (end - start) as f64 * WIDTH;
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
    let mut points: Vec<(usize, f64, f64)> = Vec::new();
    for bar in &timeline.bars {
        let op = bar.op;
        let y = 20.0 + LANE * lanes[&op.process] as f64;
        let (x1, x2) = (x(op.call), x(op.ret).max(x(op.call) + 3.0));
        let (fill, label) = if bar.stuck {
            ("#e74c3c", "cannot be placed".to_string())
        } else if let Some(position) = bar.position {
            ("#2ecc71", format!("#{position} in the order found"))
        } else {
            ("#bdc3c7", "not placed".to_string())
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
        let state = bar.state.as_deref().unwrap_or("(not placed)");
        let describe = format!("{} — {label}", describe(op));
        let _ = write!(
            svg,
            r##"<g class="op" data-index="{}" data-describe="{}" data-state="{}"><title>{}</title><rect x="{x1:.1}" y="{y}" width="{:.1}" height="20" fill="{fill}" stroke="#555"{dash}/>{text}</g>"##,
            op.index,
            escape(&describe),
            escape(state),
            escape(&format!("{describe}\nstate after: {state}")),
            x2 - x1,
        );
        if let (Some(position), Some(point)) = (bar.position, bar.point) {
            points.push((position, x(point), y + 10.0));
        }
    }
    points.sort_by_key(|p| p.0);
    if points.len() > 1 {
        let path: Vec<String> = points
            .iter()
            .map(|(_, x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = write!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="#1f4e79" stroke-width="1" opacity="0.6"/>"##,
            path.join(" ")
        );
    }
    for (_, x, y) in &points {
        let _ = write!(
            svg,
            r##"<circle class="point" cx="{x:.1}" cy="{y:.1}" r="2.5" fill="#1f4e79"/>"##
        );
    }
    if let Some(t) = timeline.fails_at {
        let _ = write!(
            svg,
            r##"<line class="fails-at" x1="{0:.1}" x2="{0:.1}" y1="10" y2="{1}" stroke="#c0392b" stroke-width="2" stroke-dasharray="6 3"/>"##,
            x(t),
            height - 10.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The page: a title, an explanation, one section per timeline, a hover panel and the script.
fn page(title: &str, intro: &str, timelines: &[Timeline]) -> String {
    let mut sections = String::new();
    for timeline in timelines {
        let _ = write!(
            sections,
            "<h2>{}</h2>\n<p>time {} to {}</p>\n{}\n",
            escape(&timeline.caption),
            timeline.start,
            timeline.end,
            svg(timeline)
        );
    }
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family: sans-serif">
<h1>{title}</h1>
<p>{intro} Dashed: outcome unknown (may take effect any time after its invocation). Hover a bar
for the whole operation and the model state after it.</p>
<p id="drawn"></p>
<pre id="state" style="position: sticky; top: 0; background: #f8f8f8; padding: 4px">(hover an operation)</pre>
{sections}<script>
(function () {{
  var bars = document.querySelectorAll('g.op');
  var panel = document.getElementById('state');
  bars.forEach(function (bar, i) {{
    bar.setAttribute('data-op', String(i + 1));
    bar.addEventListener('mouseenter', function () {{
      panel.textContent = bar.getAttribute('data-describe') + '\nstate after: ' +
        bar.getAttribute('data-state');
    }});
  }});
  document.getElementById('drawn').textContent = bars.length + ' operations drawn';
}})();
</script>
</body></html>
"#,
        title = escape(title),
        intro = escape(intro),
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
    match op.f.as_str() {
        "read" | "get" => format!("{} {output}", op.f),
        _ => format!("{} {}", op.f, op.input),
    }
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
    use crate::linearizability::check;
    use crate::model::RegisterModel;
    use serde_json::{json, Value as Json};

    fn event(process: u64, kind: EventType, f: &str, value: Json, time: u64) -> Op {
        Op {
            process,
            kind,
            f: f.into(),
            key: Some("x<y".into()),
            value,
            time,
        }
    }

    #[test]
    fn a_stale_read_is_drawn_red_after_the_green_prefix() {
        let history = History {
            events: vec![
                event(0, EventType::Invoke, "write", json!(1), 0),
                event(0, EventType::Ok, "write", json!(1), 10),
                event(1, EventType::Invoke, "read", Json::Null, 20),
                event(1, EventType::Ok, "read", Json::Null, 30),
            ],
        };
        let report = check(&history, &RegisterModel, None).unwrap();
        let page = linearizability(&history, &RegisterModel, &report).unwrap();
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
        assert!(page.contains("#1 in the order found"));
        assert!(page.contains("state after: Number(1)"), "{page}");
        assert!(page.contains(r#"class="fails-at""#));
    }

    #[test]
    fn a_linearizable_history_is_drawn_in_the_order_found_with_states() {
        // The read overlaps the write and sees it: the write is linearized first.
        let history = History {
            events: vec![
                event(1, EventType::Invoke, "read", Json::Null, 0),
                event(0, EventType::Invoke, "write", json!(1), 5),
                event(1, EventType::Ok, "read", json!(1), 20),
                event(0, EventType::Ok, "write", json!(1), 30),
            ],
        };
        let report = check(&history, &RegisterModel, None).unwrap();
        assert_eq!(report.linearization, [1, 0], "the write, then the read");
        let page = linearizability(&history, &RegisterModel, &report).unwrap();
        assert!(page.starts_with("<!doctype html>"));
        assert_eq!(page.matches(r#"<g class="op""#).count(), 2);
        assert_eq!(page.matches(r#"class="point""#).count(), 2);
        assert!(page.contains("#1 in the order found"));
        assert!(page.contains("#2 in the order found"));
        assert!(!page.contains("data-op=\""), "the script numbers the bars");
    }

    #[test]
    fn a_sequential_violation_is_drawn_with_its_longest_order() {
        // Two readers see two writes in opposite orders.
        let mut events = Vec::new();
        for (process, f, value, time) in [
            (0, "write", json!(1), 0),
            (1, "write", json!(2), 0),
            (2, "read", json!(1), 10),
            (2, "read", json!(2), 20),
            (3, "read", json!(2), 10),
            (3, "read", json!(1), 20),
        ] {
            let input = if f == "read" {
                Json::Null
            } else {
                value.clone()
            };
            events.push(event(process, EventType::Invoke, f, input, time));
            events.push(event(process, EventType::Ok, f, value, time + 1));
        }
        let history = History { events };
        let report = crate::sequential::check(&history, &RegisterModel, None).unwrap();
        let page = sequential(&history, &RegisterModel, &report)
            .unwrap()
            .expect("not sequentially consistent");
        assert!(page.contains("<h1>Not sequentially consistent</h1>"));
        assert_eq!(page.matches(r#"<g class="op""#).count(), 6);
        assert!(page.contains("cannot be placed"));
        assert!(page.contains("#1 in the order found"));
    }
}
