//! The operator's metrics, in Prometheus text format. Every label's values are bounded:
//! pools (from the ConfigMap), phases and actions (fixed enums), error kinds (fixed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram buckets, seconds.
const DRAIN_BUCKETS: [f64; 9] = [5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];
const PLAN_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
const PASS_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], v: f64) {
        if self.counts.len() != buckets.len() {
            self.counts = vec![0; buckets.len()];
        }
        for (i, b) in buckets.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, buckets: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in buckets.iter().enumerate() {
            let c = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    nodes: BTreeMap<(String, String), u64>,
    reboots: BTreeMap<String, u64>,
    evictions: BTreeMap<(String, String), u64>,
    drain: BTreeMap<String, Histogram>,
    plan: Histogram,
    pass: Histogram,
    actions: BTreeMap<String, u64>,
    stepped: BTreeMap<String, u64>,
    config_errors: u64,
    config_ok: bool,
    leader: bool,
    write_errors: u64,
    node_writes: BTreeMap<String, u64>,
    pod_lists: BTreeMap<&'static str, u64>,
    channels: BTreeMap<String, u64>,
    omaha: BTreeMap<String, u64>,
    zincati: BTreeMap<(String, String), u64>,
}

/// The registry; cheap to update from the control loop.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        if let Ok(mut i) = self.inner.lock() {
            f(&mut i);
        }
    }

    /// Replaces the nodes-per-(pool, phase) gauge.
    pub fn set_nodes(&self, counts: BTreeMap<(String, String), u64>) {
        self.with(|i| i.nodes = counts);
    }

    /// A reboot was granted in `pool`.
    pub fn reboot_granted(&self, pool: &str) {
        self.with(|i| *i.reboots.entry(pool.to_string()).or_default() += 1);
    }

    /// An eviction got `outcome` (`accepted`, `gone`, `blocked`, `refused`, `error`).
    pub fn eviction(&self, pool: &str, outcome: &'static str) {
        self.with(|i| {
            *i.evictions
                .entry((pool.to_string(), outcome.to_string()))
                .or_default() += 1
        });
    }

    /// A drain took `d` (cordon to reboot grant).
    pub fn drain_finished(&self, pool: &str, d: Duration) {
        self.with(|i| {
            i.drain
                .entry(pool.to_string())
                .or_default()
                .observe(&DRAIN_BUCKETS, d.as_secs_f64())
        });
    }

    /// A planner pass took `d`.
    pub fn planned(&self, d: Duration) {
        self.with(|i| i.plan.observe(&PLAN_BUCKETS, d.as_secs_f64()));
    }

    /// A channel change was `set` on a node or `refused` (an older channel).
    pub fn channel(&self, outcome: &'static str) {
        self.with(|i| *i.channels.entry(outcome.to_string()).or_default() += 1);
    }

    /// An Omaha request through the proxy ended with `outcome` (`offered`, `noupdate`,
    /// `withheld-<why>`, `upstream-<problem>`, `bad-request`, `events`).
    pub fn omaha(&self, outcome: &str) {
        self.with(|i| *i.omaha.entry(outcome.to_string()).or_default() += 1);
    }

    /// A request from Zincati (`graph`, `pre-reboot`, `steady-state`) ended with `outcome`
    /// (`offered`, `no-update`, `granted`, `waiting`, `steady`, `unknown-id`, a protocol
    /// error kind, `upstream-<problem>`).
    pub fn zincati(&self, endpoint: &'static str, outcome: &str) {
        self.with(|i| {
            *i.zincati
                .entry((endpoint.to_string(), outcome.to_string()))
                .or_default() += 1
        });
    }

    /// A whole pass (reading, listing pods, planning, writing its nodes' steps) took
    /// `d`. A node whose agent reports while a pass runs waits for its end: this is the
    /// wait the planner's own histogram does not show.
    pub fn passed(&self, d: Duration) {
        self.with(|i| i.pass.observe(&PASS_BUCKETS, d.as_secs_f64()));
    }

    /// An action was applied.
    pub fn action(&self, name: &'static str) {
        self.with(|i| *i.actions.entry(name.to_string()).or_default() += 1);
    }

    /// An action was applied by a step, as its node's watch event came, rather than by
    /// a pass (also counted in [`Metrics::action`]).
    pub fn stepped(&self, name: &'static str) {
        self.with(|i| *i.stepped.entry(name.to_string()).or_default() += 1);
    }

    /// The ConfigMap was rejected (true) or accepted (false).
    pub fn config(&self, rejected: bool) {
        self.with(|i| {
            if rejected {
                i.config_errors += 1;
            }
            i.config_ok = !rejected;
        });
    }

    /// Leadership changed.
    pub fn leader(&self, leading: bool) {
        self.with(|i| i.leader = leading);
    }

    /// A write to the API failed.
    pub fn write_error(&self) {
        self.with(|i| i.write_errors += 1);
    }

    /// The operator wrote a node's state, because of `cause`: an action's name, or
    /// `waiting <phase> <reason code>` for what a waiting node shows.
    pub fn node_written(&self, cause: &str) {
        self.with(|i| *i.node_writes.entry(cause.to_string()).or_default() += 1);
    }

    /// The operator listed a node's pods, for `purpose`: `draining` (a drain's progress),
    /// `candidate` (a node a free slot may take) or `ahead` (next in line for a full
    /// pool, listed before a slot frees).
    pub fn pods_listed(&self, purpose: &'static str) {
        self.with(|i| *i.pod_lists.entry(purpose).or_default() += 1);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let Ok(i) = self.inner.lock() else {
            return String::new();
        };
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP drydock_nodes Nodes per pool and phase.\n# TYPE drydock_nodes gauge"
        );
        for ((pool, phase), n) in &i.nodes {
            let _ = writeln!(o, "drydock_nodes{{pool=\"{pool}\",phase=\"{phase}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP drydock_reboots_granted_total Reboots granted.\n# TYPE drydock_reboots_granted_total counter"
        );
        for (pool, n) in &i.reboots {
            let _ = writeln!(o, "drydock_reboots_granted_total{{pool=\"{pool}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP drydock_evictions_total Eviction requests by outcome (blocked = 429 from a budget, retried after Retry-After).\n# TYPE drydock_evictions_total counter"
        );
        for ((pool, outcome), n) in &i.evictions {
            let _ = writeln!(
                o,
                "drydock_evictions_total{{pool=\"{pool}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP drydock_drain_duration_seconds From cordon to reboot grant.\n# TYPE drydock_drain_duration_seconds histogram"
        );
        for (pool, h) in &i.drain {
            h.render(
                &mut o,
                "drydock_drain_duration_seconds",
                &format!("pool=\"{pool}\""),
                &DRAIN_BUCKETS,
            );
        }
        let _ = writeln!(
            o,
            "# HELP drydock_planner_duration_seconds One planner pass.\n# TYPE drydock_planner_duration_seconds histogram"
        );
        i.plan.render(
            &mut o,
            "drydock_planner_duration_seconds",
            "",
            &PLAN_BUCKETS,
        );
        let _ = writeln!(
            o,
            "# HELP drydock_pass_duration_seconds One pass: reading, listing pods, planning and writing its nodes' steps (a node that reports meanwhile waits for its end).\n# TYPE drydock_pass_duration_seconds histogram"
        );
        i.pass
            .render(&mut o, "drydock_pass_duration_seconds", "", &PASS_BUCKETS);
        let _ = writeln!(
            o,
            "# HELP drydock_actions_total Actions applied.\n# TYPE drydock_actions_total counter"
        );
        for (a, n) in &i.actions {
            let _ = writeln!(o, "drydock_actions_total{{action=\"{a}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP drydock_steps_total Actions applied by a step as the node reported, outside the passes (also in drydock_actions_total).\n# TYPE drydock_steps_total counter"
        );
        for (a, n) in &i.stepped {
            let _ = writeln!(o, "drydock_steps_total{{action=\"{a}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP drydock_config_errors_total ConfigMap versions rejected.\n# TYPE drydock_config_errors_total counter\ndrydock_config_errors_total {}",
            i.config_errors
        );
        let _ = writeln!(
            o,
            "# HELP drydock_config_valid Whether the current ConfigMap is in force (0: the last good one is).\n# TYPE drydock_config_valid gauge\ndrydock_config_valid {}",
            u8::from(i.config_ok)
        );
        let _ = writeln!(
            o,
            "# HELP drydock_leader Whether this replica leads.\n# TYPE drydock_leader gauge\ndrydock_leader {}",
            u8::from(i.leader)
        );
        let _ = writeln!(
            o,
            "# HELP drydock_api_write_errors_total Writes to the API server that failed.\n# TYPE drydock_api_write_errors_total counter\ndrydock_api_write_errors_total {}",
            i.write_errors
        );
        let _ = writeln!(
            o,
            "# HELP drydock_node_writes_total Writes of a node's drydock state, by cause: an action, or what a waiting node shows (the load the operator puts on the API server).\n# TYPE drydock_node_writes_total counter"
        );
        for (cause, n) in &i.node_writes {
            let _ = writeln!(o, "drydock_node_writes_total{{cause=\"{cause}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP drydock_pod_lists_total Lists of one node's pods, by purpose: draining (a drain's progress), candidate (a node a free slot may take), ahead (next in line for a full pool).\n# TYPE drydock_pod_lists_total counter"
        );
        for (purpose, n) in &i.pod_lists {
            let _ = writeln!(o, "drydock_pod_lists_total{{purpose=\"{purpose}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP drydock_channel_changes_total Pool channels carried to nodes (set) or refused as a move to an older channel.\n# TYPE drydock_channel_changes_total counter"
        );
        for (outcome, n) in &i.channels {
            let _ = writeln!(
                o,
                "drydock_channel_changes_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP drydock_omaha_requests_total Omaha requests through the proxy by outcome (offered, noupdate, withheld-*, upstream-*, bad-request, events).\n# TYPE drydock_omaha_requests_total counter"
        );
        for (outcome, n) in &i.omaha {
            let _ = writeln!(
                o,
                "drydock_omaha_requests_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP drydock_zincati_requests_total Zincati's requests (update graph and FleetLock) by endpoint and outcome.\n# TYPE drydock_zincati_requests_total counter"
        );
        for ((endpoint, outcome), n) in &i.zincati {
            let _ = writeln!(
                o,
                "drydock_zincati_requests_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_exposition() {
        let m = Metrics::default();
        m.reboot_granted("workers");
        m.drain_finished("workers", Duration::from_secs(20));
        m.planned(Duration::from_millis(3));
        m.passed(Duration::from_millis(700));
        m.eviction("workers", "blocked");
        m.leader(true);
        m.zincati("pre-reboot", "granted");
        m.node_written("Drain");
        m.node_written("waiting Queued PdbBlocked");
        m.node_written("waiting Queued PdbBlocked");
        m.pods_listed("ahead");
        m.pods_listed("ahead");
        m.pods_listed("draining");
        let mut nodes = BTreeMap::new();
        nodes.insert(("workers".to_string(), "Done".to_string()), 3);
        m.set_nodes(nodes);
        let text = m.render();
        assert!(text.contains("drydock_nodes{pool=\"workers\",phase=\"Done\"} 3"));
        assert!(text.contains("drydock_reboots_granted_total{pool=\"workers\"} 1"));
        assert!(
            text.contains("drydock_drain_duration_seconds_bucket{pool=\"workers\",le=\"15\"} 0")
        );
        assert!(
            text.contains("drydock_drain_duration_seconds_bucket{pool=\"workers\",le=\"30\"} 1")
        );
        assert!(text.contains("drydock_planner_duration_seconds_count 1"));
        assert!(text.contains("drydock_pass_duration_seconds_bucket{le=\"0.5\"} 0"));
        assert!(text.contains("drydock_pass_duration_seconds_bucket{le=\"1\"} 1"));
        assert!(text.contains("drydock_evictions_total{pool=\"workers\",outcome=\"blocked\"} 1"));
        assert!(text.contains("drydock_leader 1"));
        assert!(text.contains(
            "drydock_zincati_requests_total{endpoint=\"pre-reboot\",outcome=\"granted\"} 1"
        ));
        assert!(text.contains("drydock_node_writes_total{cause=\"waiting Queued PdbBlocked\"} 2"));
        assert!(text.contains("drydock_node_writes_total{cause=\"Drain\"} 1"));
        assert!(text.contains("drydock_pod_lists_total{purpose=\"ahead\"} 2"));
        assert!(text.contains("drydock_pod_lists_total{purpose=\"draining\"} 1"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
