//! `drydockctl status`: a row per node and a line per pool, built from the live snapshot
//! and the planner's answer, for people (a table, with colour and progress bars on a
//! terminal) and for programs (JSON).

use drydock_core::planner::Plan;
use drydock_core::protocol::{Phase, parse_node_state};
use drydock_core::{Policy, Snapshot};
use jiff::Timestamp;
use serde_json::json;

/// One node's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// Name.
    pub name: String,
    /// Pool.
    pub pool: String,
    /// OS family as the agent reports it.
    pub os: Option<String>,
    /// Booted version.
    pub booted: Option<String>,
    /// The version it is going to (a grant's target, else the staged one).
    pub target: Option<String>,
    /// drydock phase (Idle when none recorded).
    pub phase: Phase,
    /// When the phase began.
    pub since: Option<Timestamp>,
    /// What happens next, if the planner would act on it now.
    pub next: Option<String>,
    /// Why it waits: reason code and message.
    pub waiting: Option<(String, String)>,
    /// A person must look at it.
    pub attention: bool,
    /// Runs the version it should and nothing is in flight.
    pub done: bool,
}

/// One pool's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    /// Name.
    pub name: String,
    /// Nodes in it.
    pub nodes: usize,
    /// Nodes done.
    pub done: usize,
    /// Unavailable now.
    pub unavailable: usize,
    /// The limit.
    pub max_unavailable: usize,
    /// Paused.
    pub paused: bool,
    /// Halted by failures.
    pub halted: bool,
    /// Window in words.
    pub window: String,
}

/// Everything `status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    /// When it was read.
    pub now: Timestamp,
    /// Pools.
    pub pools: Vec<PoolRow>,
    /// Nodes, by name.
    pub nodes: Vec<NodeRow>,
    /// A problem with the policy in the cluster.
    pub warning: Option<String>,
}

/// Builds the status from what was read and what the planner says.
pub fn build(
    snapshot: &Snapshot,
    policy: &Policy,
    plan: &Plan,
    now: Timestamp,
    warning: Option<String>,
) -> Status {
    let mut nodes: Vec<NodeRow> = snapshot
        .nodes()
        .iter()
        .map(|n| {
            let (state, _errors) = parse_node_state(&n.labels, &n.annotations);
            let phase = state.operator.phase.unwrap_or(Phase::Idle);
            let agent = &state.agent;
            let target = if phase.is_disrupting() {
                state
                    .operator
                    .target_version
                    .as_ref()
                    .map(ToString::to_string)
            } else {
                None
            }
            .or_else(|| {
                agent
                    .has_staged_update()
                    .then(|| agent.staged_version.as_ref().map(ToString::to_string))
                    .flatten()
            });
            let pool = plan
                .action_for(&n.name)
                .map(|a| a.pool.clone())
                .or_else(|| plan.waiting_for(&n.name).map(|w| w.pool.clone()))
                .unwrap_or_else(|| policy.pool_for(&n.labels).name.clone());
            let waiting = plan
                .waiting_for(&n.name)
                .map(|w| (w.reason.code.to_string(), w.reason.message.clone()))
                .or_else(|| {
                    matches!(phase, Phase::Held | Phase::Failed).then(|| {
                        (
                            state.operator.reason_code.clone().unwrap_or_default(),
                            state.operator.reason.clone().unwrap_or_default(),
                        )
                    })
                });
            let attention = plan
                .waiting_for(&n.name)
                .is_some_and(|w| w.reason.code.needs_attention())
                || matches!(phase, Phase::Held | Phase::Failed);
            let done = agent.booted_version.is_some()
                && !agent.has_staged_update()
                && matches!(phase, Phase::Idle | Phase::Done);
            NodeRow {
                name: n.name.clone(),
                pool,
                os: agent.os.map(|o| o.as_str().to_string()),
                booted: agent.booted_version.as_ref().map(ToString::to_string),
                target,
                phase,
                since: state.operator.since,
                next: plan
                    .action_for(&n.name)
                    .map(|a| a.action.name().to_string()),
                waiting,
                attention,
                done,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.pool.cmp(&b.pool).then(a.name.cmp(&b.name)));
    let pools = plan
        .pools
        .iter()
        .filter(|p| p.nodes > 0)
        .map(|p| PoolRow {
            name: p.name.clone(),
            nodes: p.nodes,
            done: nodes.iter().filter(|n| n.pool == p.name && n.done).count(),
            unavailable: p.unavailable,
            max_unavailable: p.max_unavailable,
            paused: p.paused,
            halted: p.halted,
            window: p.window.clone(),
        })
        .collect();
    Status {
        now,
        pools,
        nodes,
        warning,
    }
}

/// "45s", "3m", "2h5m", "3d4h".
pub fn age(from: Timestamp, now: Timestamp) -> String {
    let s = now.as_second().saturating_sub(from.as_second()).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => {
            let m = (s % 3600) / 60;
            if m == 0 {
                format!("{}h", s / 3600)
            } else {
                format!("{}h{m}m", s / 3600)
            }
        }
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done * width)
        .checked_div(total)
        .unwrap_or(width)
        .min(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// Pads `s` (which may hold colour codes) to `width` visible characters.
fn pad(s: &str, visible: usize, width: usize) -> String {
    format!("{s}{}", " ".repeat(width.saturating_sub(visible)))
}

fn columns(headers: &[&str], rows: &[Vec<(String, String)>]) -> String {
    // Each cell: (what is printed, its visible text).
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, (_, v)) in r.iter().enumerate() {
            widths[i] = widths[i].max(v.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<(String, String)>| {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, (p, v)) in cells.into_iter().enumerate() {
            if i == last {
                s.push_str(&p);
            } else {
                s.push_str(&pad(&p, v.chars().count(), widths[i]));
                s.push_str("  ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    out.push_str(&line(
        headers
            .iter()
            .map(|h| (h.to_string(), h.to_string()))
            .collect(),
    ));
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// The table for people; `color` adds ANSI colours (only on a terminal).
pub fn table(s: &Status, color: bool) -> String {
    let paint = Paint(color);
    let mut out = String::new();
    if let Some(w) = &s.warning {
        out.push_str(&paint.wrap("33", &format!("warning: {w}")));
        out.push_str("\n\n");
    }
    let plain = |v: String| (v.clone(), v);
    let pool_rows: Vec<Vec<(String, String)>> = s
        .pools
        .iter()
        .map(|p| {
            let mut state = Vec::new();
            if p.halted {
                state.push(paint.wrap("31", "HALTED"));
            }
            if p.paused {
                state.push(paint.wrap("33", "paused"));
            }
            let visible_state = [(p.halted, "HALTED"), (p.paused, "paused")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, t)| *t)
                .collect::<Vec<_>>()
                .join(",");
            vec![
                plain(p.name.clone()),
                plain(format!("{}/{}", p.done, p.nodes)),
                plain(bar(p.done, p.nodes, 20)),
                plain(format!("{}/{}", p.unavailable, p.max_unavailable)),
                plain(p.window.clone()),
                (state.join(","), visible_state),
            ]
        })
        .collect();
    out.push_str(&columns(
        &["POOL", "DONE", "PROGRESS", "UNAVAILABLE", "WINDOW", "STATE"],
        &pool_rows,
    ));
    out.push('\n');
    let node_rows: Vec<Vec<(String, String)>> = s
        .nodes
        .iter()
        .map(|n| {
            let phase = n.phase.to_string();
            let code = match n.phase {
                Phase::Done => "32",
                Phase::Failed => "31",
                Phase::Held => "33",
                p if p.is_disrupting() => "36",
                _ => "",
            };
            let painted = if code.is_empty() {
                phase.clone()
            } else {
                paint.wrap(code, &phase)
            };
            let why = match (&n.next, &n.waiting) {
                (Some(next), _) => format!("next: {next}"),
                (None, Some((code, message))) => {
                    format!("{}{code}: {message}", if n.attention { "! " } else { "" })
                }
                (None, None) => String::new(),
            };
            let why_painted = if n.attention {
                paint.wrap("31", &why)
            } else {
                why.clone()
            };
            vec![
                plain(n.name.clone()),
                plain(n.pool.clone()),
                plain(n.os.clone().unwrap_or_else(|| "-".into())),
                plain(n.booted.clone().unwrap_or_else(|| "-".into())),
                plain(n.target.clone().unwrap_or_else(|| "-".into())),
                (painted, phase),
                plain(n.since.map_or_else(|| "-".into(), |t| age(t, s.now))),
                (why_painted, why),
            ]
        })
        .collect();
    out.push_str(&columns(
        &[
            "NODE", "POOL", "OS", "BOOTED", "TARGET", "PHASE", "FOR", "WHY",
        ],
        &node_rows,
    ));
    if s.nodes.iter().any(|n| n.attention) {
        out.push_str("\n! needs a person (drydockctl release NODE once it is dealt with)\n");
    }
    out
}

/// The status as JSON (`{"now","pools":[...],"nodes":[...],"warning"}`).
pub fn json(s: &Status) -> String {
    let pools: Vec<_> = s
        .pools
        .iter()
        .map(|p| {
            json!({"name": p.name, "nodes": p.nodes, "done": p.done,
                "unavailable": p.unavailable, "maxUnavailable": p.max_unavailable,
                "paused": p.paused, "halted": p.halted, "window": p.window})
        })
        .collect();
    let nodes: Vec<_> = s
        .nodes
        .iter()
        .map(|n| {
            json!({"name": n.name, "pool": n.pool, "os": n.os, "booted": n.booted,
                "target": n.target, "phase": n.phase.to_string(),
                "since": n.since.map(|t| t.to_string()),
                "forSeconds": n.since.map(|t| (s.now.as_second() - t.as_second()).max(0)),
                "next": n.next,
                "waiting": n.waiting.as_ref().map(|(c, m)| json!({"code": c, "message": m})),
                "attention": n.attention, "done": n.done})
        })
        .collect();
    let doc =
        json!({"now": s.now.to_string(), "pools": pools, "nodes": nodes, "warning": s.warning});
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let t = |s: i64| Timestamp::from_second(s).expect("ts");
        assert_eq!(age(t(0), t(45)), "45s");
        assert_eq!(age(t(0), t(180)), "3m");
        assert_eq!(age(t(0), t(7500)), "2h5m");
        assert_eq!(age(t(0), t(7200)), "2h");
        assert_eq!(age(t(0), t(3 * 86400 + 4 * 3600)), "3d4h");
        assert_eq!(age(t(100), t(0)), "0s");
    }

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0, 4, 8), "[--------]");
        assert_eq!(bar(2, 4, 8), "[####----]");
        assert_eq!(bar(4, 4, 8), "[########]");
        assert_eq!(bar(0, 0, 4), "[####]");
    }

    #[test]
    fn colour_only_when_asked() {
        assert_eq!(Paint(false).wrap("31", "x"), "x");
        assert_eq!(Paint(true).wrap("31", "x"), "\x1b[31mx\x1b[0m");
        let rows = vec![vec![
            ("\x1b[31mab\x1b[0m".to_string(), "ab".to_string()),
            ("c".to_string(), "c".to_string()),
        ]];
        // Widths follow the visible text, not the escape codes.
        assert_eq!(
            columns(&["H1", "H2"], &rows),
            "H1  H2\n\x1b[31mab\x1b[0m  c\n"
        );
    }
}
