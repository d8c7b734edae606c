//! Plans rendered for people (aligned tables) and for programs (JSON, see docs/plan-json.md).

use drydock_core::planner::{Action, Plan, PodRef};
use serde_json::{Value, json};

fn table_of(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let last = cells.len() - 1;
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn action_detail(a: &Action) -> String {
    match a {
        Action::Drain { start, evict } => {
            let what = if *start { "cordon, evict" } else { "evict" };
            format!("{what} {} pod(s)", evict.len())
        }
        Action::ForceDrain { delete } => format!("delete {} pod(s)", delete.len()),
        Action::GrantReboot { token, target } => format!("token {token} -> {target}"),
        Action::Complete { uncordon }
        | Action::Hold { uncordon }
        | Action::Fail { uncordon }
        | Action::Release { uncordon } => {
            if *uncordon {
                "uncordon".into()
            } else {
                String::new()
            }
        }
        Action::MarkRebooting | Action::Verify => String::new(),
    }
}

/// The plan as three tables: pools, actions, waiting nodes.
pub fn table(plan: &Plan) -> String {
    let mut out = format!("Plan for {}\n\n", plan.now);
    let pools: Vec<Vec<String>> = plan
        .pools
        .iter()
        .map(|p| {
            let mut state = Vec::new();
            if p.paused {
                state.push("paused");
            }
            if p.halted {
                state.push("HALTED");
            }
            vec![
                p.name.clone(),
                p.nodes.to_string(),
                format!("{}/{}", p.unavailable, p.max_unavailable),
                p.pending.to_string(),
                p.in_flight.to_string(),
                p.starting.to_string(),
                p.window.clone(),
                state.join(","),
            ]
        })
        .collect();
    out.push_str(&table_of(
        &[
            "POOL",
            "NODES",
            "UNAVAILABLE",
            "PENDING",
            "IN-FLIGHT",
            "STARTING",
            "WINDOW",
            "STATE",
        ],
        &pools,
    ));
    out.push('\n');
    if plan.actions.is_empty() {
        out.push_str("No actions.\n");
    } else {
        let rows: Vec<Vec<String>> = plan
            .actions
            .iter()
            .map(|a| {
                vec![
                    a.node.clone(),
                    a.pool.clone(),
                    a.action.name().to_string(),
                    action_detail(&a.action),
                    a.reason.code.to_string(),
                    a.reason.message.clone(),
                ]
            })
            .collect();
        out.push_str(&table_of(
            &["NODE", "POOL", "ACTION", "DETAIL", "REASON", "MESSAGE"],
            &rows,
        ));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = plan
        .waiting
        .iter()
        .map(|w| {
            let flag = if w.reason.code.needs_attention() {
                "!"
            } else {
                ""
            };
            vec![
                w.node.clone(),
                w.pool.clone(),
                w.phase.to_string(),
                format!("{}{flag}", w.reason.code),
                w.reason.message.clone(),
            ]
        })
        .collect();
    out.push_str(&table_of(
        &["NODE", "POOL", "PHASE", "WAITING", "MESSAGE"],
        &rows,
    ));
    if plan.waiting.iter().any(|w| w.reason.code.needs_attention()) {
        out.push_str("\n! needs a person\n");
    }
    if let Some(t) = plan.next_wakeup {
        out.push_str(&format!("\nNext planned look: {t}\n"));
    }
    out
}

fn pods(list: &[PodRef]) -> Value {
    list.iter()
        .map(|p| json!({"namespace": p.namespace, "name": p.name, "uid": p.uid, "pdb": p.pdb}))
        .collect()
}

/// The plan as JSON: `{"now","actions":[...],"waiting":[...],"pools":[...],"nextWakeup"}`.
pub fn json(plan: &Plan) -> String {
    let actions: Vec<Value> = plan
        .actions
        .iter()
        .map(|a| {
            let mut v = json!({
                "node": a.node,
                "pool": a.pool,
                "action": a.action.name(),
                "reason": a.reason.code.as_str(),
                "message": a.reason.message,
                "nextPhase": a.action.next_phase().as_str(),
            });
            match &a.action {
                Action::Drain { start, evict } => {
                    v["cordon"] = json!(start);
                    v["evict"] = pods(evict);
                }
                Action::ForceDrain { delete } => v["delete"] = pods(delete),
                Action::GrantReboot { token, target } => {
                    v["token"] = json!(token);
                    v["targetVersion"] = json!(target);
                }
                Action::Complete { uncordon }
                | Action::Hold { uncordon }
                | Action::Fail { uncordon }
                | Action::Release { uncordon } => {
                    v["uncordon"] = json!(uncordon);
                }
                Action::MarkRebooting | Action::Verify => {}
            }
            v
        })
        .collect();
    let waiting: Vec<Value> = plan
        .waiting
        .iter()
        .map(|w| {
            json!({
                "node": w.node,
                "pool": w.pool,
                "phase": w.phase.as_str(),
                "reason": w.reason.code.as_str(),
                "message": w.reason.message,
                "needsAttention": w.reason.code.needs_attention(),
            })
        })
        .collect();
    let pools: Vec<Value> = plan
        .pools
        .iter()
        .map(|p| {
            json!({
                "name": p.name, "nodes": p.nodes, "unavailable": p.unavailable,
                "maxUnavailable": p.max_unavailable, "pending": p.pending, "inFlight": p.in_flight,
                "failed": p.failed, "starting": p.starting, "paused": p.paused, "halted": p.halted,
                "window": p.window,
            })
        })
        .collect();
    let doc = json!({
        "now": plan.now.to_string(),
        "actions": actions,
        "waiting": waiting,
        "pools": pools,
        "nextWakeup": plan.next_wakeup.map(|t| t.to_string()),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}
