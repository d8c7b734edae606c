//! The benchmark's arithmetic, without I/O: the makespan's lower bound, the reaction
//! latencies, percentiles, and the plot of nodes per phase over time.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// A node's phase change as the observer saw it, `t` seconds after the operator started.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Seconds since the start of the rollout.
    pub t: f64,
    /// The node (its index).
    pub node: usize,
    /// The phase before.
    pub from: String,
    /// The phase after.
    pub to: String,
}

/// The least time any schedule needs to update nodes that each keep a slot for `d[i]`
/// seconds, with at most `limit` at once: the longest node, the total work spread over
/// every slot, and, when every node takes the same time, one full round per `limit` nodes.
pub fn lower_bound(d: &[f64], limit: usize) -> f64 {
    let limit = limit.max(1);
    let Some(max) = d.iter().copied().reduce(f64::max) else {
        return 0.0;
    };
    let spread = d.iter().sum::<f64>() / limit as f64;
    let uniform = if d.iter().all(|x| (x - d[0]).abs() < 1e-9) {
        d.len().div_ceil(limit) as f64 * d[0]
    } else {
        0.0
    };
    max.max(spread).max(uniform)
}

/// The `q`-quantile (0–1) of `xs` by nearest rank; None when empty.
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// From a node verified to the next drain started: the k-th drain that started after the
/// first verification is paired with the k-th verification (each verification frees the
/// slot one waiting node takes). A node is verified when it reaches Done — from Verifying
/// after a bake, or straight from Rebooting when the pool has no bake and no hooks.
/// Drains of the first round (before any verification) and verifications nobody was
/// waiting for (the end of the rollout) have no pair.
pub fn reactions(changes: &[Change]) -> Vec<f64> {
    let verified: Vec<f64> = changes
        .iter()
        .filter(|c| c.to == "Done" && c.from != "Done")
        .map(|c| c.t)
        .collect();
    let Some(&first) = verified.first() else {
        return Vec::new();
    };
    let drains: Vec<f64> = changes
        .iter()
        .filter(|c| c.to == "Draining" && c.t >= first)
        .map(|c| c.t)
        .collect();
    verified
        .iter()
        .zip(&drains)
        .map(|(v, s)| (s - v).max(0.0))
        .collect()
}

/// How long nodes stayed in each phase: for every phase, the length of each stay the
/// observer saw both begin and end (a node's phase when the rollout started has no known
/// beginning and is left out). Where the makespan goes beyond its bound shows here: a
/// Draining stay longer than the pods' grace period, a Rebooting stay longer than the
/// host's reboot, time in the short phases between them.
pub fn dwell(changes: &[Change]) -> BTreeMap<String, Vec<f64>> {
    let mut since: HashMap<usize, (&str, f64)> = HashMap::new();
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for c in changes {
        if let Some((phase, t)) = since.get(&c.node)
            && *phase == c.from
        {
            out.entry(c.from.clone()).or_default().push(c.t - t);
        }
        since.insert(c.node, (c.to.as_str(), c.t));
    }
    out
}

/// How long each node held a slot of the pool: from its first step out of the queue
/// (Cordoned or Draining) to its first arrival at Done, by node. Nodes that did not get
/// that far have no entry.
pub fn slots(changes: &[Change]) -> BTreeMap<usize, f64> {
    let mut began: HashMap<usize, f64> = HashMap::new();
    let mut out = BTreeMap::new();
    for c in changes {
        if matches!(c.to.as_str(), "Cordoned" | "Draining") {
            began.entry(c.node).or_insert(c.t);
        }
        if c.to == "Done"
            && !out.contains_key(&c.node)
            && let Some(b) = began.get(&c.node)
        {
            out.insert(c.node, c.t - b);
        }
    }
    out
}

/// The count, mean, p50, p99 and max of `xs`, for the JSON report.
pub fn spread(xs: &[f64]) -> serde_json::Value {
    let mean = if xs.is_empty() {
        None
    } else {
        Some(xs.iter().sum::<f64>() / xs.len() as f64)
    };
    serde_json::json!({
        "samples": xs.len(),
        "meanSeconds": mean,
        "p50Seconds": quantile(xs, 0.5),
        "p99Seconds": quantile(xs, 0.99),
        "maxSeconds": quantile(xs, 1.0),
    })
}

/// Phases in the order a node goes through them (the plot's legend order).
pub const PHASES: [&str; 11] = [
    "Idle",
    "Queued",
    "Cordoned",
    "Draining",
    "RebootGranted",
    "Rebooting",
    "Verifying",
    "Baking",
    "Done",
    "Held",
    "Failed",
];

const COLOURS: [&str; 11] = [
    "#9e9e9e", "#607d8b", "#ffb300", "#fb8c00", "#e53935", "#8e24aa", "#3949ab", "#00897b",
    "#43a047", "#6d4c41", "#000000",
];

/// Nodes per phase over time: for each phase, (t, count) at every change.
pub fn series(initial: &[String], changes: &[Change]) -> BTreeMap<String, Vec<(f64, usize)>> {
    let mut now: BTreeMap<String, usize> = BTreeMap::new();
    for p in initial {
        *now.entry(p.clone()).or_default() += 1;
    }
    let mut out: BTreeMap<String, Vec<(f64, usize)>> = BTreeMap::new();
    for (p, n) in &now {
        out.entry(p.clone()).or_default().push((0.0, *n));
    }
    for c in changes {
        for (p, delta) in [(&c.from, -1i64), (&c.to, 1)] {
            let n = now.entry(p.clone()).or_default();
            *n = (*n as i64 + delta).max(0) as usize;
            out.entry(p.clone()).or_default().push((c.t, *n));
        }
    }
    out
}

/// An SVG line chart of nodes per phase over time.
pub fn svg(
    title: &str,
    total: usize,
    end: f64,
    series: &BTreeMap<String, Vec<(f64, usize)>>,
) -> String {
    let (w, h, left, top, bottom, right) = (900.0, 420.0, 60.0, 40.0, 40.0, 150.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let end = end.max(1.0);
    let total = total.max(1) as f64;
    let x = |t: f64| left + pw * (t / end).clamp(0.0, 1.0);
    let y = |n: f64| top + ph * (1.0 - n / total);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{left}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        o,
        r##"<path d="M{left},{top} V{} H{}" fill="none" stroke="#333"/>"##,
        top + ph,
        left + pw
    );
    for i in 0..=4 {
        let n = total * f64::from(i) / 4.0;
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">{:.0}</text>"#,
            left - 6.0,
            y(n) + 4.0,
            n
        );
        let t = end * f64::from(i) / 4.0;
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.0} s</text>"#,
            x(t),
            top + ph + 18.0,
            t
        );
    }
    let mut legend = 0.0;
    for (i, phase) in PHASES.iter().enumerate() {
        let Some(points) = series.get(*phase) else {
            continue;
        };
        if points.iter().all(|(_, n)| *n == 0) {
            continue;
        }
        let mut d = String::new();
        for (k, (t, n)) in points.iter().enumerate() {
            if k == 0 {
                let _ = write!(d, "M{:.1},{:.1}", x(*t), y(*n as f64));
            } else {
                let _ = write!(d, " H{:.1} V{:.1}", x(*t), y(*n as f64));
            }
        }
        let _ = write!(d, " H{:.1}", x(end));
        let _ = writeln!(
            o,
            r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
            COLOURS[i]
        );
        let ly = top + 10.0 + legend * 18.0;
        let _ = writeln!(
            o,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{phase}</text>"#,
            left + pw + 16.0,
            ly - 10.0,
            COLOURS[i],
            left + pw + 34.0,
            ly
        );
        legend += 1.0;
    }
    o.push_str("</svg>\n");
    o
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(t: f64, node: usize, from: &str, to: &str) -> Change {
        Change {
            t,
            node,
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn the_lower_bound_is_rounds_for_equal_nodes_and_the_spread_or_longest_otherwise() {
        assert_eq!(lower_bound(&[10.0; 5], 2), 30.0);
        assert_eq!(lower_bound(&[10.0; 4], 2), 20.0);
        assert_eq!(lower_bound(&[30.0, 1.0, 1.0], 2), 30.0);
        assert_eq!(lower_bound(&[4.0, 6.0, 8.0, 2.0], 2), 10.0);
        assert_eq!(lower_bound(&[], 3), 0.0);
        assert_eq!(lower_bound(&[5.0], 0), 5.0);
    }

    #[test]
    fn quantiles_are_by_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.5), Some(50.0));
        assert_eq!(quantile(&xs, 0.99), Some(99.0));
        assert_eq!(quantile(&xs, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn each_verification_is_paired_with_the_next_drain_that_took_its_slot() {
        let changes = vec![
            change(0.0, 0, "Cordoned", "Draining"),
            change(0.1, 1, "Cordoned", "Draining"),
            change(5.0, 0, "Verifying", "Done"),
            change(5.4, 2, "Cordoned", "Draining"),
            change(6.0, 1, "Rebooting", "Done"),
            change(6.2, 3, "Cordoned", "Draining"),
            change(9.0, 2, "Rebooting", "Done"),
        ];
        let r = reactions(&changes);
        assert_eq!(r.len(), 2);
        assert!(
            (r[0] - 0.4).abs() < 1e-9 && (r[1] - 0.2).abs() < 1e-9,
            "{r:?}"
        );
    }

    #[test]
    fn stays_are_measured_from_the_change_into_a_phase_to_the_change_out_of_it() {
        let changes = vec![
            change(1.0, 0, "Queued", "Draining"),
            change(2.0, 1, "Queued", "Cordoned"),
            change(2.5, 1, "Cordoned", "Draining"),
            change(7.0, 0, "Draining", "RebootGranted"),
            change(7.5, 0, "RebootGranted", "Rebooting"),
            change(8.5, 1, "Draining", "RebootGranted"),
            change(29.0, 0, "Rebooting", "Done"),
        ];
        let d = dwell(&changes);
        // The initial Queued stays have no known start.
        assert!(!d.contains_key("Queued"), "{d:?}");
        assert_eq!(d["Cordoned"], vec![0.5]);
        assert_eq!(d["Draining"], vec![6.0, 6.0]);
        assert_eq!(d["RebootGranted"], vec![0.5]);
        assert_eq!(d["Rebooting"], vec![21.5]);
        let s = slots(&changes);
        assert_eq!(s.len(), 1, "node 1 never reached Done: {s:?}");
        assert_eq!(s[&0], 28.0);
        let v = spread(&d["Draining"]);
        assert_eq!(v["samples"], 2);
        assert_eq!(v["meanSeconds"], 6.0);
        assert_eq!(spread(&[])["p99Seconds"], serde_json::Value::Null);
    }

    #[test]
    fn the_series_counts_nodes_per_phase_and_the_plot_draws_each_phase_present() {
        let initial = vec!["Queued".to_string(), "Queued".to_string()];
        let changes = vec![
            change(1.0, 0, "Queued", "Draining"),
            change(3.0, 0, "Draining", "Done"),
        ];
        let s = series(&initial, &changes);
        assert_eq!(s["Queued"], vec![(0.0, 2), (1.0, 1)]);
        assert_eq!(s["Draining"], vec![(1.0, 1), (3.0, 0)]);
        assert_eq!(s["Done"], vec![(3.0, 1)]);
        let plot = svg("t <1>", 2, 4.0, &s);
        assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
        assert!(plot.contains(">Queued<") && plot.contains(">Done<") && !plot.contains(">Failed<"));
        assert!(plot.contains("t &lt;1&gt;"));
    }
}
