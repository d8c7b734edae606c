//! Planner tests: scenarios first, then properties over random fleets, then a fleet model
//! that applies each plan and checks that every eligible node finishes.

use std::collections::BTreeMap;

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::protocol::keys;
use crate::selector::LabelSelector;
use crate::snapshot::{PdbSnapshot, PodPhase, PodSnapshot};
use crate::strmap::StrMap;

const NOW: &str = "2026-11-25T12:00:00Z"; // a Wednesday

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn minutes(m: i64) -> Timestamp {
    now()
        .checked_add(jiff::SignedDuration::from_mins(m))
        .unwrap()
}

/// A Ready Flatcar node on 4081.2.0 (slot a) with 4230.0.0 staged.
fn node(name: &str) -> NodeSnapshot {
    let mut n = NodeSnapshot {
        name: name.into(),
        uid: format!("uid-{name}"),
        labels: StrMap::new(),
        annotations: StrMap::new(),
        ready: true,
        unschedulable: false,
    };
    set(&mut n, keys::OS, "flatcar");
    set(&mut n, keys::BOOTED_VERSION, "4081.2.0");
    set(&mut n, keys::BOOTED_SLOT, "a");
    set(&mut n, keys::BOOT_ID, &format!("boot-{name}-1"));
    set(&mut n, keys::STAGED_VERSION, "4230.0.0");
    n.labels.insert(keys::REBOOT_NEEDED.into(), "true".into());
    n
}

fn up_to_date(name: &str) -> NodeSnapshot {
    let mut n = node(name);
    n.annotations.remove(keys::STAGED_VERSION);
    n.labels.insert(keys::REBOOT_NEEDED.into(), "false".into());
    n
}

fn set(n: &mut NodeSnapshot, k: &str, v: &str) {
    n.annotations.insert(k.into(), v.into());
}

fn phase(n: &mut NodeSnapshot, p: Phase, since: Timestamp) {
    n.labels.insert(keys::PHASE.into(), p.as_str().into());
    set(n, keys::PHASE_SINCE, &since.to_string());
}

fn draining(name: &str, since: Timestamp) -> NodeSnapshot {
    let mut n = node(name);
    phase(&mut n, Phase::Draining, since);
    set(&mut n, keys::CORDONED, "true");
    set(&mut n, keys::DRAIN_STARTED, &since.to_string());
    n.unschedulable = true;
    n
}

fn granted(name: &str, since: Timestamp, token: u64) -> NodeSnapshot {
    let mut n = draining(name, since);
    phase(&mut n, Phase::RebootGranted, since);
    set(&mut n, keys::REBOOT_TOKEN, &token.to_string());
    set(&mut n, keys::TARGET_VERSION, "4230.0.0");
    set(&mut n, keys::GRANT_SLOT, "a");
    set(&mut n, keys::GRANT_BOOT_ID, &format!("boot-{name}-1"));
    n
}

/// The node after it rebooted into `version` from `slot`.
fn rebooted(n: &mut NodeSnapshot, version: &str, slot: &str) {
    let token = n.annotations[keys::REBOOT_TOKEN].to_string();
    set(n, keys::REBOOT_ACK, &token);
    set(n, keys::BOOT_ID, &format!("boot-{}-2", n.name));
    set(n, keys::BOOTED_VERSION, version);
    set(n, keys::BOOTED_SLOT, slot);
    if version == "4230.0.0" {
        n.annotations.remove(keys::STAGED_VERSION);
    }
}

fn pod(ns: &str, name: &str, node: &str, app: &str) -> PodSnapshot {
    PodSnapshot {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{ns}-{name}"),
        node: Some(node.into()),
        labels: [("app".to_string(), app.to_string())].into(),
        owner: PodOwner::Controller {
            kind: "ReplicaSet".into(),
            name: app.into(),
        },
        phase: PodPhase::Running,
        ready: true,
        deleted_by: None,
        has_empty_dir: false,
    }
}

fn pdb(ns: &str, app: &str, allowed: u32) -> PdbSnapshot {
    PdbSnapshot {
        namespace: ns.into(),
        name: app.into(),
        selector: Some(LabelSelector {
            match_labels: [("app".to_string(), app.to_string())].into(),
            match_expressions: vec![],
        }),
        disruptions_allowed: allowed,
        status_current: true,
    }
}

fn policy(yaml: &str) -> Policy {
    Policy::from_yaml(yaml).unwrap()
}

fn run(
    nodes: Vec<NodeSnapshot>,
    pods: Vec<PodSnapshot>,
    pdbs: Vec<PdbSnapshot>,
    p: &Policy,
    at: Timestamp,
) -> Plan {
    plan(&Snapshot::new(nodes, pods, pdbs), p, at)
}

fn started(plan: &Plan) -> Vec<&str> {
    plan.actions
        .iter()
        .filter(|a| matches!(a.action, Action::Drain { start: true, .. }))
        .map(|a| a.node.as_str())
        .collect()
}

fn wait_code(plan: &Plan, node: &str) -> ReasonCode {
    plan.waiting_for(node)
        .unwrap_or_else(|| panic!("{node} does not wait: {plan:#?}"))
        .reason
        .code
}

fn action(plan: &Plan, node: &str) -> Action {
    plan.action_for(node)
        .unwrap_or_else(|| panic!("no action for {node}: {plan:#?}"))
        .action
        .clone()
}

#[test]
fn a_uniform_pool_starts_exactly_max_unavailable_nodes() {
    let nodes = (0..5).map(|i| node(&format!("n{i}"))).collect();
    let plan = run(nodes, vec![], vec![], &policy("maxUnavailable: 2"), now());
    assert_eq!(started(&plan).len(), 2);
    let waiting: Vec<_> = plan
        .waiting
        .iter()
        .filter(|w| w.reason.code == ReasonCode::PoolAtCapacity)
        .collect();
    assert_eq!(waiting.len(), 3);
    assert_eq!(
        waiting[0].reason.message,
        "pool default: at its limit of 2 unavailable node(s)"
    );
    assert_eq!(waiting[0].phase, Phase::Queued);
    assert_eq!(plan.pools[0].starting, 2);
}

#[test]
fn a_not_ready_node_uses_up_the_pools_capacity() {
    let mut sick = up_to_date("sick");
    sick.ready = false;
    let plan = run(
        vec![node("a"), node("b"), sick],
        vec![],
        vec![],
        &policy("maxUnavailable: 1"),
        now(),
    );
    assert!(started(&plan).is_empty());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::PoolAtCapacity);
    assert_eq!(
        plan.waiting_for("a").unwrap().reason.message,
        "pool default: at its limit of 1 unavailable node(s)"
    );
}

#[test]
fn a_pdb_that_allows_nothing_is_named() {
    let plan = run(
        vec![node("a")],
        vec![pod("shop", "web-1", "a", "web")],
        vec![pdb("shop", "web", 0)],
        &policy(""),
        now(),
    );
    assert!(started(&plan).is_empty());
    let w = plan.waiting_for("a").unwrap();
    assert_eq!(w.reason.code, ReasonCode::PdbBlocked);
    assert_eq!(
        w.reason.message,
        "PDB shop/web has no disruption to spare (this node needs 1)"
    );
    let mut stale = pdb("shop", "web", 3);
    stale.status_current = false;
    let plan = run(
        vec![node("a")],
        vec![pod("shop", "web-1", "a", "web")],
        vec![stale],
        &policy(""),
        now(),
    );
    assert_eq!(
        plan.waiting_for("a").unwrap().reason.message,
        "PDB shop/web has no disruption to spare (this node needs 1; its status is not current yet)"
    );
}

#[test]
fn two_nodes_sharing_a_budget_of_one_drain_one_at_a_time() {
    let plan = run(
        vec![node("a"), node("b")],
        vec![
            pod("shop", "web-1", "a", "web"),
            pod("shop", "web-2", "b", "web"),
        ],
        vec![pdb("shop", "web", 1)],
        &policy("maxUnavailable: 2"),
        now(),
    );
    assert_eq!(started(&plan).len(), 1);
    let other = if started(&plan)[0] == "a" { "b" } else { "a" };
    assert_eq!(
        plan.waiting_for(other).unwrap().reason.message,
        "PDB shop/web has no disruption to spare (this node needs 1)",
        "one wording, whether the budget allows none or others' drains hold it"
    );
}

/// `node` as the operator left it after saying it waits with `code` and `message`.
fn queued_with(name: &str, code: ReasonCode, message: &str) -> NodeSnapshot {
    let mut n = node(name);
    phase(&mut n, Phase::Queued, minutes(-5));
    set(&mut n, keys::REASON_CODE, code.as_str());
    set(&mut n, keys::REASON, message);
    n
}

#[test]
fn a_node_waiting_on_a_budget_keeps_naming_it_while_it_holds_when_the_pool_fills() {
    // "b" drains and holds the pool's only slot; "a" was refused by budget web before.
    let was = "PDB shop/web has no disruption to spare (this node needs 1)";
    let a = queued_with("a", ReasonCode::PdbBlocked, was);
    let nodes = vec![a.clone(), draining("b", minutes(-1))];
    let pods = vec![
        pod("shop", "web-1", "a", "web"),
        pod("shop", "web-2", "b", "web"),
    ];
    let p = policy("maxUnavailable: 1");
    // Budget web has nothing left (b's pending eviction takes its one): both hold a.
    let plan = run(
        nodes.clone(),
        pods.clone(),
        vec![pdb("shop", "web", 1)],
        &p,
        now(),
    );
    let w = plan.waiting_for("a").unwrap();
    assert_eq!(
        (w.reason.code, w.reason.message.as_str()),
        (ReasonCode::PdbBlocked, was)
    );
    // The same with a's pods not listed: the budget it names has nothing left.
    let unlisted = Snapshot::new(nodes.clone(), pods.clone(), vec![pdb("shop", "web", 1)])
        .with_pods_unlisted(["a"]);
    let w = plan_of(&unlisted, &p).waiting_for("a").unwrap().clone();
    assert_eq!(
        (w.reason.code, w.reason.message.as_str()),
        (ReasonCode::PdbBlocked, was)
    );
    assert!(
        plan_of(&unlisted, &p).list_pods.is_empty(),
        "no slot, no list"
    );

    // Once the budget has room, only the pool holds a back, and a says so.
    let plan = run(
        nodes.clone(),
        pods.clone(),
        vec![pdb("shop", "web", 2)],
        &p,
        now(),
    );
    assert_eq!(wait_code(&plan, "a"), ReasonCode::PoolAtCapacity);
    let unlisted =
        Snapshot::new(nodes, pods, vec![pdb("shop", "web", 2)]).with_pods_unlisted(["a"]);
    assert_eq!(
        plan_of(&unlisted, &p).waiting_for("a").unwrap().reason.code,
        ReasonCode::PoolAtCapacity
    );

    // A forged or foreign reason naming no budget, or one that does not exist, gives way.
    for forged in [
        "PDB",
        "PDB  x",
        "PDB shop/gone has no disruption to spare",
        "budget",
    ] {
        let nodes = vec![
            queued_with("a", ReasonCode::PdbBlocked, forged),
            draining("b", minutes(-1)),
        ];
        let s = Snapshot::new(
            nodes,
            vec![pod("shop", "web-2", "b", "web")],
            vec![pdb("shop", "web", 1)],
        )
        .with_pods_unlisted(["a"]);
        assert_eq!(
            plan_of(&s, &p).waiting_for("a").unwrap().reason.code,
            ReasonCode::PoolAtCapacity,
            "{forged}"
        );
    }
}

fn plan_of(s: &Snapshot, p: &Policy) -> Plan {
    plan(s, p, now())
}

#[test]
fn a_node_blocked_by_several_budgets_keeps_naming_the_one_it_named() {
    // "a" needs one of web and one of db; both are held by "b"'s drain. It named db
    // before: db it keeps naming, though web comes first.
    let was = "PDB shop/db has no disruption to spare (this node needs 1)";
    let nodes = vec![
        queued_with("a", ReasonCode::PdbBlocked, was),
        draining("b", minutes(-1)),
    ];
    let pods = vec![
        pod("shop", "web-1", "a", "web"),
        pod("shop", "db-1", "a", "db"),
        pod("shop", "web-2", "b", "web"),
        pod("shop", "db-2", "b", "db"),
    ];
    let pdbs = vec![pdb("shop", "db", 1), pdb("shop", "web", 1)];
    let p = policy("maxUnavailable: 2");
    let plan = run(nodes.clone(), pods.clone(), pdbs.clone(), &p, now());
    assert_eq!(plan.waiting_for("a").unwrap().reason.message, was);
    // Without a reason to keep, the first budget in order is named.
    let mut fresh = nodes;
    fresh[0] = node("a");
    let plan = run(fresh, pods, pdbs, &p, now());
    let first = plan.waiting_for("a").unwrap().reason.message.clone();
    assert!(first.starts_with("PDB shop/"), "{first}");
    // db freed: a now names web, the one that still holds it.
    let nodes = vec![
        queued_with("a", ReasonCode::PdbBlocked, was),
        draining("b", minutes(-1)),
    ];
    let plan = run(
        nodes,
        vec![
            pod("shop", "web-1", "a", "web"),
            pod("shop", "db-1", "a", "db"),
            pod("shop", "web-2", "b", "web"),
        ],
        vec![pdb("shop", "db", 1), pdb("shop", "web", 1)],
        &p,
        now(),
    );
    assert_eq!(
        plan.waiting_for("a").unwrap().reason.message,
        "PDB shop/web has no disruption to spare (this node needs 1)"
    );
}

#[test]
fn budgets_pack_nodes_in_parallel_when_they_allow() {
    let nodes = (0..4).map(|i| node(&format!("n{i}"))).collect();
    let pods = (0..4)
        .map(|i| pod("shop", &format!("web-{i}"), &format!("n{i}"), "web"))
        .collect();
    let plan = run(
        nodes,
        pods,
        vec![pdb("shop", "web", 3)],
        &policy("maxUnavailable: 4"),
        now(),
    );
    assert_eq!(started(&plan).len(), 3);
}

#[test]
fn pods_are_asked_for_only_to_fill_free_slots_and_listing_them_gives_the_full_plan() {
    // Ten staged nodes, room for three; one budget lets one web pod go at a time, so
    // some candidates are blocked and the next ones get their turn to be listed.
    let nodes: Vec<NodeSnapshot> = (0..10).map(|i| node(&format!("n{i}"))).collect();
    let pods: Vec<PodSnapshot> = (0..10)
        .map(|i| {
            let app = if i % 2 == 0 { "web" } else { "db" };
            pod("shop", &format!("{app}-{i}"), &format!("n{i}"), app)
        })
        .collect();
    let pdbs = vec![pdb("shop", "web", 1)];
    let p = policy("maxUnavailable: 3");
    let full = run(nodes.clone(), pods.clone(), pdbs.clone(), &p, now());
    assert_eq!(started(&full).len(), 3, "{full:#?}");
    assert!(full.list_pods.is_empty(), "every node's pods were given");

    let mut unlisted: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut lists = 0;
    let plan = loop {
        let snapshot = Snapshot::new(nodes.clone(), pods.clone(), pdbs.clone())
            .with_pods_unlisted(unlisted.iter().map(String::as_str));
        let next = plan(&snapshot, &p, now());
        if next.list_pods.is_empty() {
            break next;
        }
        // Never more asked for than there are free slots; the asked-for nodes are
        // neither acted on nor said to wait.
        assert!(
            started(&next).len() + next.list_pods.len() <= 3,
            "{next:#?}"
        );
        for name in &next.list_pods {
            assert!(next.action_for(name).is_none() && next.waiting_for(name).is_none());
        }
        assert_eq!(
            next.actions.len() + next.waiting.len() + next.list_pods.len(),
            nodes.len()
        );
        lists += next.list_pods.len();
        unlisted.retain(|n| !next.list_pods.contains(n));
    };
    assert_eq!(
        plan, full,
        "listing what was asked for gives the plan of a full snapshot"
    );
    assert!(
        lists < nodes.len(),
        "{lists} nodes listed of {}: only candidates are",
        nodes.len()
    );
    for w in &plan.waiting {
        if w.reason.code == ReasonCode::PoolAtCapacity {
            assert!(
                unlisted.contains(&w.node),
                "{} was listed for nothing",
                w.node
            );
        }
    }
}

#[test]
fn a_full_pool_lists_ahead_as_many_of_its_next_nodes_as_it_has_nodes_past_their_drain() {
    // A pool of 3 with a node draining and two granted: the two granted free a slot
    // within a reboot, so the next two in line have their pods listed ahead; the one
    // draining does not count (its slot frees later).
    let mut nodes = vec![
        draining("d0", minutes(-1)),
        granted("g0", minutes(-1), 1),
        granted("g1", minutes(-1), 2),
    ];
    let queued: Vec<String> = (0..6).map(|i| format!("q{i}")).collect();
    nodes.extend(queued.iter().map(|n| node(n)));
    let p = policy("maxUnavailable: 3");
    let all_unlisted = Snapshot::new(nodes.clone(), vec![], vec![])
        .with_pods_unlisted(queued.iter().map(String::as_str));
    let plan = plan_of(&all_unlisted, &p);
    assert!(plan.list_pods.is_empty(), "no free slot: {plan:#?}");
    assert_eq!(plan.list_ahead.len(), 2, "{plan:#?}");
    for name in &plan.list_ahead {
        assert_eq!(wait_code(&plan, name), ReasonCode::PoolAtCapacity);
    }

    // Listed ahead, the same two come first in line: once they are listed nothing more
    // is asked for, and when a slot frees the first of them starts without a list.
    let rest: Vec<&str> = queued
        .iter()
        .map(String::as_str)
        .filter(|n| !plan.list_ahead.iter().any(|a| a == n))
        .collect();
    let listed_ahead =
        Snapshot::new(nodes.clone(), vec![], vec![]).with_pods_unlisted(rest.iter().copied());
    assert!(plan_of(&listed_ahead, &p).list_ahead.is_empty());
    let mut freed = nodes.clone();
    freed.retain(|n| n.name != "g0");
    let freed = Snapshot::new(freed, vec![], vec![]).with_pods_unlisted(rest.iter().copied());
    let next = plan_of(&freed, &p);
    assert!(next.list_pods.is_empty(), "{next:#?}");
    assert_eq!(started(&next), vec![plan.list_ahead[0].as_str()]);

    // Nothing is listed ahead while the pool has room (its candidates are listed to
    // start) or nothing past its drain.
    let draining_only: Vec<NodeSnapshot> = std::iter::once(draining("d0", minutes(-1)))
        .chain(queued.iter().map(|n| node(n)))
        .collect();
    let s = Snapshot::new(draining_only, vec![], vec![])
        .with_pods_unlisted(queued.iter().map(String::as_str));
    let roomy = plan_of(&s, &p);
    assert_eq!(roomy.list_pods.len(), 2, "{roomy:#?}");
    assert!(roomy.list_ahead.is_empty(), "{roomy:#?}");
    let s = Snapshot::new(
        vec![
            draining("d0", minutes(-1)),
            draining("d1", minutes(-1)),
            draining("d2", minutes(-1)),
            node("q0"),
        ],
        vec![],
        vec![],
    )
    .with_pods_unlisted(["q0"]);
    assert!(plan_of(&s, &p).list_ahead.is_empty());

    // However many are past their drain, no further down the queue than LIST_AHEAD_MAX.
    let big = 3 * LIST_AHEAD_MAX;
    let nodes: Vec<NodeSnapshot> = (0..big)
        .map(|i| granted(&format!("g{i}"), minutes(-1), i as u64))
        .chain((0..big).map(|i| node(&format!("q{i}"))))
        .collect();
    let queued: Vec<String> = (0..big).map(|i| format!("q{i}")).collect();
    let s =
        Snapshot::new(nodes, vec![], vec![]).with_pods_unlisted(queued.iter().map(String::as_str));
    let plan = plan_of(&s, &policy(&format!("maxUnavailable: {big}")));
    assert_eq!(
        plan.list_ahead.len(),
        LIST_AHEAD_MAX,
        "{:?}",
        plan.list_ahead
    );
}

#[test]
fn a_node_needing_more_than_a_budget_ever_allows_drains_alone() {
    let pods = vec![
        pod("shop", "web-1", "a", "web"),
        pod("shop", "web-2", "a", "web"),
    ];
    let plan = run(
        vec![node("a")],
        pods,
        vec![pdb("shop", "web", 1)],
        &policy(""),
        now(),
    );
    assert_eq!(started(&plan), vec!["a"]);
}

#[test]
fn evictions_pending_on_draining_nodes_use_the_budget() {
    let pods = vec![
        pod("shop", "web-1", "a", "web"),
        pod("shop", "web-2", "b", "web"),
    ];
    let plan = run(
        vec![draining("a", minutes(-1)), node("b")],
        pods,
        vec![pdb("shop", "web", 1)],
        &policy("maxUnavailable: 2"),
        now(),
    );
    assert!(matches!(
        action(&plan, "a"),
        Action::Drain { start: false, .. }
    ));
    assert_eq!(wait_code(&plan, "b"), ReasonCode::PdbBlocked);
}

#[test]
fn outside_the_window_nothing_starts_and_the_plan_wakes_at_the_opening() {
    let p = policy("windows: [{days: [Sat], start: '01:00', length: 4h, timeZone: Europe/Berlin}]");
    let plan = run(vec![node("a")], vec![], vec![], &p, now());
    assert!(started(&plan).is_empty());
    let w = plan.waiting_for("a").unwrap();
    assert_eq!(w.reason.code, ReasonCode::OutsideWindow);
    assert_eq!(w.reason.message, "window opens Sat 01:00 Europe/Berlin");
    assert_eq!(
        plan.next_wakeup,
        Some("2026-11-28T00:00:00Z".parse().unwrap())
    );
    // Inside the window it starts.
    let plan = run(
        vec![node("a")],
        vec![],
        vec![],
        &p,
        "2026-11-28T01:00:00Z".parse().unwrap(),
    );
    assert_eq!(started(&plan), vec!["a"]);
}

#[test]
fn a_drain_in_flight_continues_after_its_window_closes() {
    let p = policy("windows: [{days: [Sat], start: '01:00', length: 4h}]");
    let plan = run(vec![draining("a", minutes(-1))], vec![], vec![], &p, now());
    assert!(matches!(
        action(&plan, "a"),
        Action::GrantReboot { token: 1, .. }
    ));
}

#[test]
fn a_drained_node_waits_for_its_before_reboot_hooks_then_gets_a_fresh_token() {
    let p = policy("hooks: {beforeReboot: [example.com/backup-done]}");
    let mut n = draining("a", minutes(-2));
    set(&mut n, keys::REBOOT_TOKEN, "4");
    set(&mut n, keys::REBOOT_ACK, "4");
    let plan = run(vec![n.clone()], vec![], vec![], &p, now());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::BeforeRebootHook);
    set(&mut n, "example.com/backup-done", "true");
    let plan = run(vec![n], vec![], vec![], &p, now());
    assert_eq!(
        action(&plan, "a"),
        Action::GrantReboot {
            token: 5,
            target: "4230.0.0".into()
        }
    );
}

#[test]
fn daemonset_mirror_and_finished_pods_do_not_block_a_drain() {
    let mut ds = pod("kube-system", "proxy", "a", "proxy");
    ds.owner = PodOwner::DaemonSet;
    let mut mirror = pod("kube-system", "etcd", "a", "etcd");
    mirror.owner = PodOwner::Mirror;
    let mut done = pod("jobs", "j", "a", "j");
    done.phase = PodPhase::Succeeded;
    let plan = run(
        vec![draining("a", minutes(-1))],
        vec![ds, mirror, done],
        vec![],
        &policy(""),
        now(),
    );
    assert!(matches!(action(&plan, "a"), Action::GrantReboot { .. }));
}

#[test]
fn terminating_pods_are_waited_for_not_evicted_again() {
    let mut p = pod("shop", "web-1", "a", "web");
    p.deleted_by = Some(jiff::Timestamp::UNIX_EPOCH); // terminating
    let plan = run(
        vec![draining("a", minutes(-1))],
        vec![p],
        vec![],
        &policy(""),
        now(),
    );
    assert_eq!(wait_code(&plan, "a"), ReasonCode::DrainInProgress);
}

#[test]
fn drain_timeouts_follow_the_policy() {
    let pods = || vec![pod("shop", "web-1", "a", "web")];
    let n = || draining("a", minutes(-16));
    let plan = run(vec![n()], pods(), vec![], &policy(""), now());
    assert_eq!(action(&plan, "a"), Action::Hold { uncordon: true });
    assert_eq!(plan.actions[0].reason.code, ReasonCode::DrainTimeout);
    assert_eq!(
        plan.actions[0].reason.message,
        "drain did not finish within 15m: 1 pod(s) remain (shop/web-1)"
    );
    let plan = run(
        vec![n()],
        pods(),
        vec![],
        &policy("drain: {onTimeout: force}"),
        now(),
    );
    assert!(matches!(action(&plan, "a"), Action::ForceDrain { ref delete } if delete.len() == 1));
    let plan = run(
        vec![n()],
        pods(),
        vec![],
        &policy("drain: {onTimeout: reboot}"),
        now(),
    );
    assert!(matches!(action(&plan, "a"), Action::GrantReboot { .. }));
    // Before the timeout, the drain goes on and the plan wakes at the deadline.
    let plan = run(
        vec![draining("a", minutes(-5))],
        pods(),
        vec![],
        &policy(""),
        now(),
    );
    assert!(matches!(
        action(&plan, "a"),
        Action::Drain { start: false, .. }
    ));
    assert_eq!(plan.next_wakeup, Some(minutes(10)));
}

/// `n` with the operator state that `a` leaves (as the operator would write it).
fn after(n: &NodeSnapshot, a: &PlannedAction, at: Timestamp) -> NodeSnapshot {
    let (state, _) = crate::protocol::parse_node_state(&n.labels, &n.annotations);
    let next = crate::transition::after_action(&state, a, at);
    let (annotations, labels) = next.to_metadata();
    let mut out = n.clone();
    out.annotations.extend(annotations);
    out.labels.extend(labels);
    out.unschedulable = next.cordoned;
    out
}

/// Whether the operator would write anything for `node` while it waits as planned.
fn waiting_writes(plan: &Plan, n: &NodeSnapshot, at: Timestamp) -> bool {
    let (state, _) = crate::protocol::parse_node_state(&n.labels, &n.annotations);
    let w = plan
        .waiting_for(&n.name)
        .unwrap_or_else(|| panic!("{} does not wait: {plan:#?}", n.name));
    crate::transition::while_waiting(&state, w, at).is_some()
}

#[test]
fn waiting_after_the_grant_the_acknowledgement_and_the_completion_writes_nothing_more() {
    let p = policy("health: {bake: 0s}\n");
    // Drained: the grant, and then no rewording while the agent has not acknowledged.
    let drained = draining("a", minutes(-1));
    let plan = run(vec![drained.clone()], vec![], vec![], &p, now());
    let grant = plan.actions[0].clone();
    assert!(
        matches!(grant.action, Action::GrantReboot { .. }),
        "{plan:#?}"
    );
    assert!(grant.reason.message.contains("acknowledge"), "{grant:?}");
    let granted = after(&drained, &grant, now());
    let plan = run(vec![granted.clone()], vec![], vec![], &p, minutes(1));
    assert_eq!(wait_code(&plan, "a"), ReasonCode::DrainComplete);
    assert!(!waiting_writes(&plan, &granted, minutes(1)));

    // Acknowledged: recorded as Rebooting, under the reason it then waits with.
    let mut acked = granted.clone();
    let token = acked.annotations[keys::REBOOT_TOKEN].to_string();
    set(&mut acked, keys::REBOOT_ACK, &token);
    let plan = run(vec![acked.clone()], vec![], vec![], &p, minutes(1));
    let mark = plan.actions[0].clone();
    assert_eq!(mark.action, Action::MarkRebooting);
    assert!(mark.reason.message.contains("4230.0.0"), "{mark:?}");
    let rebooting = after(&acked, &mark, minutes(1));
    let plan = run(vec![rebooting.clone()], vec![], vec![], &p, minutes(2));
    assert_eq!(wait_code(&plan, "a"), ReasonCode::Rebooting);
    assert!(!waiting_writes(&plan, &rebooting, minutes(2)));

    // Back on the target, no bake: completed, and Done keeps the completion's reason.
    let mut back = rebooting.clone();
    rebooted(&mut back, "4230.0.0", "b");
    back.labels
        .insert(keys::REBOOT_NEEDED.into(), "false".into());
    let plan = run(vec![back.clone()], vec![], vec![], &p, minutes(3));
    let complete = plan.actions[0].clone();
    assert_eq!(complete.action, Action::Complete { uncordon: true });
    let done = after(&back, &complete, minutes(3));
    let plan = run(vec![done.clone()], vec![], vec![], &p, minutes(4));
    assert_eq!(wait_code(&plan, "a"), ReasonCode::BootVerified);
    assert!(!waiting_writes(&plan, &done, minutes(4)));
}

#[test]
fn a_granted_reboot_is_followed_to_verification() {
    let p = policy("");
    let n = granted("a", minutes(-1), 3);
    let plan = run(vec![n.clone()], vec![], vec![], &p, now());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::AwaitingAck);

    let mut acked = n.clone();
    set(&mut acked, keys::REBOOT_ACK, "3");
    let plan = run(vec![acked.clone()], vec![], vec![], &p, now());
    assert_eq!(action(&plan, "a"), Action::MarkRebooting);

    let mut back = n.clone();
    rebooted(&mut back, "4230.0.0", "b");
    let plan = run(vec![back.clone()], vec![], vec![], &p, now());
    assert_eq!(action(&plan, "a"), Action::Verify);

    back.ready = false;
    let plan = run(vec![back.clone()], vec![], vec![], &p, now());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::Rebooting);

    // An agent that cannot read its slot yet (rpm-ostree not answering) is waited for.
    back.ready = true;
    set(&mut back, keys::BOOTED_SLOT, "unknown");
    let plan = run(vec![back.clone()], vec![], vec![], &p, now());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::Rebooting);
    let plan = run(vec![back], vec![], vec![], &p, minutes(60));
    assert_eq!(action(&plan, "a"), Action::Fail { uncordon: true });
    assert_eq!(plan.actions[0].reason.code, ReasonCode::NeverReturned);
}

#[test]
fn a_node_past_its_drain_steps_alone_on_its_agents_reports() {
    let p = policy("health: {bake: 0s}");
    let n = granted("a", minutes(-1), 3);
    let read = |n: &NodeSnapshot| std::sync::Arc::new(ReadNode::new(n.clone()));
    // Waiting for the acknowledgement: nothing to write.
    assert_eq!(step(&read(&n), &p, now()), None);
    let mut acked = n.clone();
    set(&mut acked, keys::REBOOT_ACK, "3");
    let a = step(&read(&acked), &p, now()).expect("a step");
    assert_eq!(
        (a.node.as_str(), a.pool.as_str(), a.action),
        ("a", "default", Action::MarkRebooting)
    );
    let mut back = n.clone();
    rebooted(&mut back, "4230.0.0", "b");
    let a = step(&read(&back), &p, now()).expect("a step");
    assert_eq!(a.action, Action::Complete { uncordon: true });
    // A drain, a queued node, a finished one: what they do next depends on the fleet.
    assert_eq!(step(&read(&draining("d", minutes(-1))), &p, now()), None);
    assert_eq!(step(&read(&node("q")), &p, now()), None);
    assert_eq!(step(&read(&up_to_date("u")), &p, now()), None);
    // A garbled node is left to the whole plan, which holds it.
    let mut garbled = acked.clone();
    set(&mut garbled, keys::REBOOT_TOKEN, "three");
    assert_eq!(step(&read(&garbled), &p, now()), None);
}

#[test]
fn without_bake_or_hooks_a_verified_boot_completes_at_once() {
    let p = policy("health: {bake: 0s}");
    let mut back = granted("a", minutes(-1), 3);
    rebooted(&mut back, "4230.0.0", "b");
    let plan = run(vec![back.clone()], vec![], vec![], &p, now());
    assert_eq!(action(&plan, "a"), Action::Complete { uncordon: true });
    assert_eq!(plan.actions[0].reason.code, ReasonCode::BootVerified);
    assert_eq!(
        plan.actions[0].reason.message,
        "booted 4230.0.0 from slot b (no bake, no after-reboot hooks)"
    );
    // Still NotReady: waited for, as with a bake.
    back.ready = false;
    let plan = run(vec![back.clone()], vec![], vec![], &p, now());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::Rebooting);
    // An after-reboot hook keeps the Verifying step.
    back.ready = true;
    let p = policy("health: {bake: 0s}\nhooks: {afterReboot: [example.com/smoke-ok]}");
    let plan = run(vec![back], vec![], vec![], &p, now());
    assert_eq!(action(&plan, "a"), Action::Verify);
}

#[test]
fn a_rollback_fails_the_node_and_halts_the_pool() {
    let p = policy("");
    let mut n = granted("a", minutes(-3), 1);
    rebooted(&mut n, "4081.2.0", "a");
    let plan = run(vec![n, node("b")], vec![], vec![], &p, now());
    assert_eq!(action(&plan, "a"), Action::Fail { uncordon: true });
    assert_eq!(plan.actions[0].reason.code, ReasonCode::Rollback);
    assert_eq!(
        plan.actions[0].reason.message,
        "came back on 4081.2.0 (slot a), expected 4230.0.0 from the other slot than a"
    );

    let mut failed = up_to_date("a");
    phase(&mut failed, Phase::Failed, minutes(-1));
    let plan = run(vec![failed.clone(), node("b")], vec![], vec![], &p, now());
    assert_eq!(wait_code(&plan, "b"), ReasonCode::PoolHalted);
    assert!(plan.pools[0].halted);

    // A person releases the failed node (naming its phase-since): the pool moves again.
    set(&mut failed, keys::RELEASE, &minutes(-1).to_string());
    let plan = run(vec![failed.clone(), node("b")], vec![], vec![], &p, now());
    assert_eq!(action(&plan, "a"), Action::Release { uncordon: false });
    // A stale release (another Failed episode) does nothing.
    set(&mut failed, keys::RELEASE, &minutes(-30).to_string());
    let plan = run(vec![failed], vec![], vec![], &p, now());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::Failed);
}

#[test]
fn halting_waits_for_the_configured_number_of_failures() {
    let p = policy("health: {haltAfterFailures: 2}");
    let mut failed = up_to_date("a");
    phase(&mut failed, Phase::Failed, minutes(-1));
    let plan = run(vec![failed, node("b")], vec![], vec![], &p, now());
    assert_eq!(started(&plan), vec!["b"]);
}

#[test]
fn reboot_timeouts_fail_or_hold() {
    let p = policy("health: {readyTimeout: 10m}");
    let n = granted("a", minutes(-11), 1);
    let plan = run(vec![n.clone()], vec![], vec![], &p, now());
    assert_eq!(action(&plan, "a"), Action::Hold { uncordon: true });
    assert_eq!(plan.actions[0].reason.code, ReasonCode::AgentNoAck);
    let mut acked = n;
    set(&mut acked, keys::REBOOT_ACK, "1");
    let plan = run(vec![acked], vec![], vec![], &p, now());
    assert_eq!(action(&plan, "a"), Action::Fail { uncordon: true });
    assert_eq!(plan.actions[0].reason.code, ReasonCode::NeverReturned);
}

#[test]
fn verifying_bakes_then_checks_after_hooks_then_completes() {
    let p = policy("health: {bake: 5m}\nhooks: {afterReboot: [example.com/smoke-ok]}");
    let mut n = granted("a", minutes(-10), 1);
    rebooted(&mut n, "4230.0.0", "b");
    phase(&mut n, Phase::Verifying, minutes(-2));
    let plan = run(vec![n.clone()], vec![], vec![], &p, now());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::Baking);
    assert_eq!(plan.next_wakeup, Some(minutes(3)));
    let plan = run(vec![n.clone()], vec![], vec![], &p, minutes(4));
    assert_eq!(wait_code(&plan, "a"), ReasonCode::AfterRebootHook);
    set(&mut n, "example.com/smoke-ok", "true");
    let plan = run(vec![n], vec![], vec![], &p, minutes(4));
    assert_eq!(action(&plan, "a"), Action::Complete { uncordon: true });
}

#[test]
fn person_holds_and_their_release() {
    let p = policy("");
    let mut n = node("a");
    set(&mut n, keys::HOLD, "investigating disk errors");
    let plan = run(vec![n.clone()], vec![], vec![], &p, now());
    assert_eq!(action(&plan, "a"), Action::Hold { uncordon: false });
    assert_eq!(
        plan.actions[0].reason.message,
        "held by a person: investigating disk errors"
    );

    phase(&mut n, Phase::Held, minutes(-1));
    set(&mut n, keys::REASON_CODE, "HeldByPerson");
    let plan = run(vec![n.clone()], vec![], vec![], &p, now());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::Held);
    n.annotations.remove(keys::HOLD);
    let plan = run(vec![n], vec![], vec![], &p, now());
    assert_eq!(action(&plan, "a"), Action::Release { uncordon: false });
}

#[test]
fn garbage_state_holds_the_node_for_a_person_and_never_panics() {
    let mut n = draining("a", minutes(-1));
    set(&mut n, keys::REBOOT_TOKEN, "-1");
    let plan = run(vec![n.clone()], vec![], vec![], &policy(""), now());
    assert_eq!(action(&plan, "a"), Action::Hold { uncordon: true });
    assert_eq!(plan.actions[0].reason.code, ReasonCode::ProtocolError);
    assert!(
        plan.actions[0]
            .reason
            .message
            .contains("drydock.dev/reboot-token: \"-1\" is not a token")
    );
    // Once Held for it, the node waits instead of being held again and again.
    phase(&mut n, Phase::Held, now());
    set(&mut n, keys::REASON_CODE, "ProtocolError");
    let plan = run(vec![n], vec![], vec![], &policy(""), now());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::ProtocolError);
}

#[test]
fn canaries_go_first_and_bake_before_the_rest() {
    let p = policy("maxUnavailable: 3\ncanary: 1");
    let nodes: Vec<_> = (0..4).map(|i| node(&format!("n{i}"))).collect();
    let plan = run(nodes.clone(), vec![], vec![], &p, now());
    assert_eq!(started(&plan).len(), 1);
    let canary = started(&plan)[0].to_string();
    assert!(
        plan.waiting
            .iter()
            .filter(|w| w.reason.code == ReasonCode::CanaryFirst)
            .count()
            == 3
    );
    // Same canary every time: the order is stable.
    let mut reversed = nodes.clone();
    reversed.reverse();
    assert_eq!(
        started(&run(reversed, vec![], vec![], &p, now())),
        vec![canary.as_str()]
    );
    // Once the canary is Done on the target, the rest go, up to the limit.
    let mut rest: Vec<_> = nodes.into_iter().filter(|n| n.name != canary).collect();
    let mut done = up_to_date(&canary);
    set(&mut done, keys::BOOTED_VERSION, "4230.0.0");
    phase(&mut done, Phase::Done, minutes(-1));
    rest.push(done);
    assert_eq!(started(&run(rest, vec![], vec![], &p, now())).len(), 3);
}

#[test]
fn pins_pauses_and_downgrades_hold_nodes_back() {
    let plan = run(
        vec![node("a")],
        vec![],
        vec![],
        &policy("version: '<=4200'"),
        now(),
    );
    assert_eq!(
        plan.waiting_for("a").unwrap().reason.message,
        "staged 4230.0.0 is outside pool default's pin <=4200"
    );
    let plan = run(
        vec![node("a")],
        vec![],
        vec![],
        &policy("paused: true"),
        now(),
    );
    assert_eq!(wait_code(&plan, "a"), ReasonCode::GloballyPaused);
    let p = policy("pools: [{name: w, paused: true, nodeSelector: {role: w}}]");
    let mut n = node("a");
    n.labels.insert("role".into(), "w".into());
    let plan = run(vec![n], vec![], vec![], &p, now());
    assert_eq!(
        plan.waiting_for("a").unwrap().reason.message,
        "pool w is paused"
    );
    let mut old = node("a");
    set(&mut old, keys::STAGED_VERSION, "4000.0.0");
    let plan = run(vec![old.clone()], vec![], vec![], &policy(""), now());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::Downgrade);
    let plan = run(
        vec![old],
        vec![],
        vec![],
        &policy("allowDowngrade: true"),
        now(),
    );
    assert_eq!(started(&plan), vec!["a"]);
}

#[test]
fn pods_the_drain_cannot_handle_are_explained() {
    let mut unmanaged = pod("dev", "scratch", "a", "scratch");
    unmanaged.owner = PodOwner::Unmanaged;
    let plan = run(
        vec![node("a")],
        vec![unmanaged.clone()],
        vec![],
        &policy(""),
        now(),
    );
    assert_eq!(wait_code(&plan, "a"), ReasonCode::UnmanagedPod);
    let plan = run(
        vec![node("a")],
        vec![unmanaged],
        vec![],
        &policy("drain: {deleteUnmanagedPods: true}"),
        now(),
    );
    assert_eq!(started(&plan), vec!["a"]);

    let mut cache = pod("shop", "cache", "a", "cache");
    cache.has_empty_dir = true;
    let plan = run(vec![node("a")], vec![cache], vec![], &policy(""), now());
    assert_eq!(wait_code(&plan, "a"), ReasonCode::EmptyDirData);

    let mut both = pdb("shop", "web", 5);
    both.name = "web-too".into();
    let plan = run(
        vec![node("a")],
        vec![pod("shop", "web-1", "a", "web")],
        vec![pdb("shop", "web", 5), both],
        &policy(""),
        now(),
    );
    assert_eq!(
        plan.waiting_for("a").unwrap().reason.message,
        "pod shop/web-1 is covered by shop/web and shop/web-too; the Eviction API refuses such pods"
    );
}

#[test]
fn cordons_by_others_are_respected_and_stale_drydock_cordons_cleared() {
    let mut theirs = node("a");
    theirs.unschedulable = true;
    let plan = run(
        vec![theirs],
        vec![],
        vec![],
        &policy("maxUnavailable: 2"),
        now(),
    );
    assert_eq!(wait_code(&plan, "a"), ReasonCode::CordonedByOther);
    let mut ours = up_to_date("a");
    ours.unschedulable = true;
    set(&mut ours, keys::CORDONED, "true");
    phase(&mut ours, Phase::Done, minutes(-1));
    let plan = run(vec![ours], vec![], vec![], &policy(""), now());
    assert_eq!(action(&plan, "a"), Action::Release { uncordon: true });
}

#[test]
fn a_withdrawn_update_ends_the_drain_and_uncordons() {
    let mut n = draining("a", minutes(-1));
    n.annotations.remove(keys::STAGED_VERSION);
    let plan = run(vec![n], vec![], vec![], &policy(""), now());
    assert_eq!(action(&plan, "a"), Action::Release { uncordon: true });
}

#[test]
fn every_node_appears_once_and_up_to_date_nodes_say_so() {
    let plan = run(
        vec![up_to_date("a"), node("b")],
        vec![],
        vec![],
        &policy(""),
        now(),
    );
    assert_eq!(wait_code(&plan, "a"), ReasonCode::UpToDate);
    assert_eq!(plan.actions.len() + plan.waiting.len(), 2);
}

// ---------------------------------------------------------------------------------------
// Properties over random fleets.

#[derive(Debug, Clone)]
struct FleetSpec {
    nodes: Vec<(u8, bool, bool, u8)>, // (kind, ready, cordoned-by-other, pool 0/1)
    pods: Vec<(u8, u8, bool)>,        // (node, app, has_empty_dir)
    pdb_allowed: Vec<u8>,             // per app
    max_a: u8,
    max_b_percent: u8,
    window: u8,
    canary: u8,
}

fn fleet_spec() -> impl Strategy<Value = FleetSpec> {
    (
        prop::collection::vec(
            (
                0u8..6,
                prop::bool::weighted(0.9),
                prop::bool::weighted(0.1),
                0u8..2,
            ),
            1..30,
        ),
        prop::collection::vec((0u8..30, 0u8..6, prop::bool::weighted(0.05)), 0..80),
        prop::collection::vec(0u8..4, 6),
        1u8..5,
        1u8..=100,
        0u8..3,
        0u8..3,
    )
        .prop_map(
            |(nodes, pods, pdb_allowed, max_a, max_b_percent, window, canary)| FleetSpec {
                nodes,
                pods,
                pdb_allowed,
                max_a,
                max_b_percent,
                window,
                canary,
            },
        )
}

fn build(
    spec: &FleetSpec,
) -> (
    Vec<NodeSnapshot>,
    Vec<PodSnapshot>,
    Vec<PdbSnapshot>,
    Policy,
) {
    let mut nodes = Vec::new();
    for (i, (kind, ready, other_cordon, pool)) in spec.nodes.iter().enumerate() {
        let name = format!("n{i:02}");
        let mut n = match kind {
            0 => up_to_date(&name),
            1 | 2 => node(&name),
            3 => draining(&name, minutes(-3)),
            4 => granted(&name, minutes(-2), 2),
            _ => {
                let mut n = granted(&name, minutes(-4), 1);
                rebooted(&mut n, "4230.0.0", "b");
                phase(&mut n, Phase::Verifying, minutes(-1));
                n
            }
        };
        n.ready = *ready;
        if *other_cordon && !n.unschedulable {
            n.unschedulable = true;
        }
        n.labels
            .insert("pool".into(), if *pool == 0 { "a" } else { "b" }.into());
        nodes.push(n);
    }
    let apps = ["web", "api", "db", "cache", "queue", "ui"];
    let pods = spec
        .pods
        .iter()
        .enumerate()
        .filter(|(_, (n, _, _))| (*n as usize) < nodes.len())
        .map(|(i, (n, app, ed))| {
            let mut p = pod(
                "shop",
                &format!("p{i}"),
                &nodes[*n as usize].name,
                apps[*app as usize],
            );
            p.has_empty_dir = *ed;
            p
        })
        .collect();
    let pdbs = apps
        .iter()
        .zip(&spec.pdb_allowed)
        .map(|(a, n)| pdb("shop", a, u32::from(*n)))
        .collect();
    let window = match spec.window {
        0 => "",
        1 => "    windows: [{days: [Wed], start: '11:00', length: 2h}]\n",
        _ => "    windows: [{days: [Sat], start: '01:00', length: 2h}]\n",
    };
    let yaml = format!(
        "pools:\n  - name: a\n    nodeSelector: {{pool: a}}\n    maxUnavailable: {}\n    canary: {}\n{window}  - name: b\n    nodeSelector: {{pool: b}}\n    maxUnavailable: {}%\n",
        spec.max_a, spec.canary, spec.max_b_percent
    );
    (nodes, pods, pdbs, policy(&yaml))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn no_pool_ever_exceeds_max_unavailable(spec in fleet_spec()) {
        let (nodes, pods, pdbs, p) = build(&spec);
        let plan = run(nodes, pods, pdbs, &p, now());
        for pool in &plan.pools {
            if pool.starting > 0 {
                prop_assert!(pool.unavailable + pool.starting <= pool.max_unavailable, "{pool:?}");
            }
        }
    }

    #[test]
    fn no_plan_spends_more_than_a_budget_allows(spec in fleet_spec()) {
        let (nodes, pods, pdbs, p) = build(&spec);
        let snapshot = Snapshot::new(nodes, pods, pdbs);
        let plan = plan(&snapshot, &p, now());
        for (b, pdb) in snapshot.pdbs().iter().enumerate() {
            // Evictions still pending on nodes that were already draining.
            let mut pending = 0u32;
            let mut spend = 0u32;
            for (ni, n) in snapshot.nodes().iter().enumerate() {
                let count = snapshot.pods_on(ni).filter(|(i, p)| p.needs_eviction() && snapshot.pdbs_of(*i).contains(&(b as u32))).count() as u32;
                if n.labels.get(keys::PHASE)== Some("Draining") {
                    pending += count;
                }
                if plan.action_for(&n.name).is_some_and(|a| matches!(a.action, Action::Drain { start: true, .. })) {
                    spend += count.min(pdb.allowed());
                }
            }
            let available = pdb.allowed().saturating_sub(pending);
            prop_assert!(spend <= available, "PDB {} spends {spend} of {available}", pdb.key());
        }
    }

    #[test]
    fn a_node_past_its_drain_steps_alone_as_the_whole_plan_would_step_it(spec in fleet_spec()) {
        let (nodes, pods, pdbs, p) = build(&spec);
        let snapshot = Snapshot::new(nodes, pods, pdbs);
        let plan = plan(&snapshot, &p, now());
        for read in snapshot.nodes() {
            let alone = step(read, &p, now());
            if is_past_drain(read.state().operator.phase()) && read.errors().is_empty() {
                prop_assert_eq!(alone.as_ref(), plan.action_for(&read.name), "{}", read.name);
            } else {
                prop_assert!(alone.is_none(), "{} stepped alone in {:?}", read.name, read.state().operator.phase());
            }
        }
    }

    #[test]
    fn nothing_new_starts_outside_a_window(spec in fleet_spec()) {
        let (nodes, pods, pdbs, p) = build(&spec);
        let plan = run(nodes, pods, pdbs, &p, now());
        if spec.window == 2 {
            let started_in_a = plan.actions.iter().any(|a| a.pool == "a" && matches!(a.action, Action::Drain { start: true, .. }));
            prop_assert!(!started_in_a, "a drain started in pool a outside its window");
        }
    }

    #[test]
    fn plans_are_deterministic_whatever_the_input_order(spec in fleet_spec(), seed in any::<u64>()) {
        let (nodes, pods, pdbs, p) = build(&spec);
        let first = run(nodes.clone(), pods.clone(), pdbs.clone(), &p, now());
        let again = run(nodes.clone(), pods.clone(), pdbs.clone(), &p, now());
        prop_assert_eq!(&first, &again);
        let mut shuffled = nodes;
        let mut pods = pods;
        let n = shuffled.len();
        for i in 0..n {
            let j = (seed.wrapping_mul(i as u64 + 7) % n as u64) as usize;
            shuffled.swap(i, j);
        }
        pods.reverse();
        prop_assert_eq!(&first, &run(shuffled, pods, pdbs, &p, now()));
    }

    #[test]
    fn every_node_gets_exactly_one_answer(spec in fleet_spec()) {
        let (nodes, pods, pdbs, p) = build(&spec);
        let count = nodes.len();
        let plan = run(nodes, pods, pdbs, &p, now());
        let mut seen: Vec<&str> = plan.actions.iter().map(|a| a.node.as_str()).chain(plan.waiting.iter().map(|w| w.node.as_str())).collect();
        seen.sort_unstable();
        seen.dedup();
        prop_assert_eq!(seen.len(), count);
        prop_assert_eq!(plan.actions.len() + plan.waiting.len(), count);
    }

    #[test]
    fn grants_only_follow_a_finished_drain(spec in fleet_spec()) {
        let (nodes, pods, pdbs, p) = build(&spec);
        let snapshot = Snapshot::new(nodes, pods, pdbs);
        let plan = plan(&snapshot, &p, now());
        for a in &plan.actions {
            if let Action::GrantReboot { .. } = a.action {
                let ni = snapshot.node_index(&a.node).unwrap();
                prop_assert_eq!(snapshot.nodes()[ni].labels.get(keys::PHASE), Some("Draining"));
                prop_assert!(snapshot.pods_on(ni).all(|(_, p)| !p.blocks_drain()), "{} granted with pods left", a.node);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A fleet model: applies each plan like the operator and the agents would, then plans
// again, until every node is done.

struct Model {
    nodes: Vec<NodeSnapshot>,
    pods: Vec<PodSnapshot>,
    pdbs: Vec<PdbSnapshot>,
    now: Timestamp,
    waves: usize,
    peak_unavailable: BTreeMap<String, usize>,
}

impl Model {
    fn step(&mut self, p: &Policy) -> Plan {
        let plan = plan(
            &Snapshot::new(self.nodes.clone(), self.pods.clone(), self.pdbs.clone()),
            p,
            self.now,
        );
        for pool in &plan.pools {
            let e = self.peak_unavailable.entry(pool.name.clone()).or_default();
            *e = (*e).max(pool.unavailable + pool.starting);
        }
        if plan
            .actions
            .iter()
            .any(|a| matches!(a.action, Action::Drain { start: true, .. }))
        {
            self.waves += 1;
        }
        for a in &plan.actions {
            let i = self.nodes.iter().position(|n| n.name == a.node).unwrap();
            let now = self.now.to_string();
            let n = &mut self.nodes[i];
            n.labels
                .insert(keys::PHASE.into(), a.action.next_phase().as_str().into());
            n.annotations.insert(keys::PHASE_SINCE.into(), now.clone());
            match &a.action {
                Action::Drain { start, evict } => {
                    if *start {
                        n.unschedulable = true;
                        n.annotations.insert(keys::CORDONED.into(), "true".into());
                        n.annotations
                            .insert(keys::DRAIN_STARTED.into(), now.clone());
                    }
                    // Evictions succeed; replacements land on the first schedulable node.
                    let name = n.name.clone();
                    let target = self
                        .nodes
                        .iter()
                        .find(|m| !m.unschedulable && m.name != name)
                        .map(|m| m.name.clone());
                    for e in evict {
                        if let Some(pd) = self.pods.iter_mut().find(|p| p.uid == e.uid) {
                            pd.node = target.clone();
                            pd.uid = format!("{}-r", pd.uid);
                        }
                    }
                }
                Action::GrantReboot { token, target } => {
                    let slot = n.annotations[keys::BOOTED_SLOT].to_string();
                    let boot = n.annotations[keys::BOOT_ID].to_string();
                    n.annotations
                        .insert(keys::REBOOT_TOKEN.into(), token.to_string());
                    n.annotations
                        .insert(keys::TARGET_VERSION.into(), target.clone());
                    n.annotations.insert(keys::GRANT_SLOT.into(), slot);
                    n.annotations.insert(keys::GRANT_BOOT_ID.into(), boot);
                }
                Action::Complete { uncordon }
                | Action::Release { uncordon }
                | Action::Hold { uncordon }
                | Action::Fail { uncordon }
                    if *uncordon =>
                {
                    n.unschedulable = false;
                    n.annotations.remove(keys::CORDONED);
                }
                _ => {}
            }
        }
        // Agents: a fresh grant is acknowledged and the node reboots into the staged slot.
        for n in &mut self.nodes {
            let token: Option<u64> = n
                .annotations
                .get(keys::REBOOT_TOKEN)
                .and_then(|t| t.parse().ok());
            let ack: Option<u64> = n
                .annotations
                .get(keys::REBOOT_ACK)
                .and_then(|t| t.parse().ok());
            if token > ack {
                let t = token.unwrap_or(0).to_string();
                n.annotations.insert(keys::REBOOT_ACK.into(), t.clone());
                let staged = n
                    .annotations
                    .remove(keys::STAGED_VERSION)
                    .unwrap_or_default();
                n.annotations.insert(keys::BOOTED_VERSION.into(), staged);
                let slot = if &n.annotations[keys::BOOTED_SLOT] == "a" {
                    "b"
                } else {
                    "a"
                };
                n.annotations.insert(keys::BOOTED_SLOT.into(), slot.into());
                n.annotations.insert(
                    keys::BOOT_ID.into(),
                    format!("boot-{}-after-grant-{t}", n.name),
                );
                n.labels.insert(keys::REBOOT_NEEDED.into(), "false".into());
            }
        }
        self.now = self
            .now
            .checked_add(jiff::SignedDuration::from_mins(1))
            .unwrap();
        plan
    }

    fn all_done(&self) -> bool {
        self.nodes.iter().all(|n| {
            n.labels.get(keys::PHASE) == Some("Done")
                && n.annotations.get(keys::BOOTED_VERSION) == Some("4230.0.0")
                && !n.unschedulable
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_uniform_fleet_without_budgets_rolls_in_ceil_n_over_k_rounds(n in 1usize..40, k in 1u32..8) {
        let p = policy(&format!("maxUnavailable: {k}\nhealth: {{bake: 0s}}"));
        let mut m = Model { nodes: (0..n).map(|i| node(&format!("n{i:02}"))).collect(), pods: vec![], pdbs: vec![], now: now(), waves: 0, peak_unavailable: BTreeMap::new() };
        for _ in 0..(n * 10 + 20) {
            if m.all_done() { break; }
            m.step(&p);
        }
        prop_assert!(m.all_done(), "not every node finished");
        prop_assert_eq!(m.waves, n.div_ceil(k as usize));
        prop_assert!(m.peak_unavailable["default"] <= k as usize);
    }

    #[test]
    fn every_eligible_node_finishes_with_budgets_and_pools(n in 2usize..25, pods_per_node in 0usize..4, allowed in 1u32..3, k in 1u32..4) {
        let p = policy(&format!("health: {{bake: 1m}}\npools: [{{name: even, maxUnavailable: {k}, nodeSelector: {{half: even}}}}]\nmaxUnavailable: 50%"));
        let nodes: Vec<NodeSnapshot> = (0..n).map(|i| {
            let mut x = node(&format!("n{i:02}"));
            x.labels.insert("half".into(), if i % 2 == 0 { "even" } else { "odd" }.into());
            x
        }).collect();
        let apps = ["web", "api", "db"];
        let pods: Vec<PodSnapshot> = (0..n * pods_per_node).map(|i| pod("shop", &format!("p{i}"), &format!("n{:02}", i % n), apps[i % 3])).collect();
        let pdbs = apps.iter().map(|a| pdb("shop", a, allowed)).collect();
        let mut m = Model { nodes, pods, pdbs, now: now(), waves: 0, peak_unavailable: BTreeMap::new() };
        for _ in 0..(n * 20 + 50) {
            if m.all_done() { break; }
            m.step(&p);
        }
        prop_assert!(m.all_done(), "not every node finished: {:?}", m.nodes.iter().map(|x| (x.name.clone(), x.labels.get(keys::PHASE).map(str::to_string))).collect::<Vec<_>>());
        prop_assert!(m.peak_unavailable.get("even").copied().unwrap_or(0) <= k as usize);
    }
}

#[test]
fn only_a_change_between_fleet_following_reasons_is_a_flicker() {
    use ReasonCode::*;
    assert!(PdbBlocked.is_fleet_flicker("PoolAtCapacity"));
    assert!(PoolAtCapacity.is_fleet_flicker("PdbBlocked"));
    assert!(DrainInProgress.is_fleet_flicker("DrainInProgress"));
    // The action that began the phase, then the fleet: a drain's pods terminating.
    assert!(DrainInProgress.is_fleet_flicker("Scheduled"));
    assert!(!Scheduled.is_fleet_flicker("DrainInProgress"));
    // A halt, a pause or a window is news, whichever way it goes.
    assert!(!PoolHalted.is_fleet_flicker("PoolAtCapacity"));
    assert!(!PoolAtCapacity.is_fleet_flicker("PoolPaused"));
    assert!(!OutsideWindow.is_fleet_flicker("PdbBlocked"));
    assert!(!PdbBlocked.is_fleet_flicker("not a code"));
    // The action codes are those declared after `Failed`, in order, each once, and none
    // of them is a waiting node's reason.
    assert!(ReasonCode::ACTIONS.windows(2).all(|w| w[0] < w[1]));
    for a in ReasonCode::ACTIONS {
        assert!(a > Failed, "{a}");
        assert!(!ReasonCode::FOLLOWS_THE_FLEET.contains(&a), "{a}");
    }
}
