//! The leader's loop: read the fleet, ask the planner, act.
//!
//! Nodes, PodDisruptionBudgets and the `drydock-config` ConfigMap are watched (reflector
//! caches that every replica keeps warm). Pods are listed only for the nodes whose pods
//! the plan reads, with a field selector on `spec.nodeName`, each decoded only as far as
//! the planner reads it ([`FleetPod`]) and shared, not copied, between the pod cache, a
//! pass and its plans, so memory follows the node count and the pods of the nodes being
//! drained or listed as candidates, not the cluster's pod count or the size of its pods: a
//! draining node is listed afresh on every pass (its drain is decided on what is there
//! now); a node with an update staged that waits its turn is
//! listed only when the planner asks for it — when it is a candidate for a free slot
//! ([`planner::Plan::list_pods`]) — and that list is kept for [`WAITING_PODS_TTL`]
//! (it only affects which candidate goes next: the drain of the one chosen works on a
//! fresh list, and the Eviction API enforces the budgets either way). A queue of
//! thousands waiting for a slot therefore costs no lists at all.
//!
//! A pass runs when something relevant changes (at once after a quiet spell, else
//! [`PASS_GAP`] after the last pass), when the plan's `next_wakeup` comes (a timeout, a
//! bake end, a window edge), when a refused eviction's `Retry-After` ends, and every
//! `drain_poll` while a drain waits for pods to go — sooner when a terminating pod's
//! grace period ends before the next poll. Every
//! write is a server-side apply of the node's whole operator state (field manager
//! `drydock-operator`), a function of what was read — so a pass repeated by a new leader
//! writes the same thing, and nothing lives only in memory except the `Retry-After`
//! deadlines, which a new leader simply does not know (it asks once more), and the
//! follow-ups still queued: an action's node write is made in the pass, and what it
//! leaves to do — its Events, its drain's evictions — runs beside the passes, so that a
//! slow eviction holds up neither the next node's write nor the next pass. A new leader
//! plans the evictions of a draining node again from its pods; a queued Event is lost
//! with the leader that held it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use drydock_core::channel::{self, ChannelDecision};
use drydock_core::planner::{self, Action, PlannedAction, PodRef};
use drydock_core::policy::{GracePeriod, Policy};
use drydock_core::protocol::{NodeState, OperatorState, Phase, keys};
use drydock_core::snapshot::{NodeSnapshot, PodSnapshot, ReadNode, Snapshot};
use drydock_core::transition::{self, Severity};
use futures_util::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::ahead::Ahead;
use crate::claims::{Claims, Writer};
use crate::drain::{self, Evicted};
use crate::events::{Kind, Publisher};
use crate::metrics::Metrics;
use crate::own_writes::OwnWrites;
use crate::settle::Settling;
use crate::slim::{FleetNode, FleetPod};
use crate::touched::Touched;

/// How long the pods of a node that waits its turn (Idle, Queued, Done: not cordoned by
/// drydock) are taken from the last list.
pub const WAITING_PODS_TTL: Duration = Duration::from_secs(30);

/// How long a draining node's pod list stands for the passes that follow it, unless a
/// pod in it is due to be gone by now. A list can only be behind the node by pods that
/// have gone since (a cordoned node takes no new ones from the scheduler), so an older
/// list holds a grant back, never gives one early; it also counts the budgets' pending
/// evictions high, never low. Passes that follow each other (a step freed a slot, a
/// refill's writes came back) then plan on the list of a moment ago rather than each
/// opening with every draining node's list; the drain's own polls are further apart.
const DRAIN_LIST_STANDS: Duration = Duration::from_millis(500);

/// How long a draining node's list stands when the drain has nothing left to evict on
/// it (every pod it has to wait for is already terminating) and no pod in it is due to
/// be gone yet. Until the first of them is due, a new list could only show the same
/// pods still terminating, so the passes wait for that moment rather than listing the
/// node every half second; the bound keeps a pod with a long grace period from hiding
/// the rest of the node (a pod bound to the node by name, past the cordon) for long.
const DRAIN_LIST_TERMINATING_STANDS: Duration = Duration::from_secs(10);

/// Whether a draining node's pod list taken `age` ago still stands for a pass reading
/// at `now` (see [`DRAIN_LIST_STANDS`], [`DRAIN_LIST_TERMINATING_STANDS`]).
fn drain_list_stands(pods: &[Arc<PodSnapshot>], age: Duration, now: Timestamp) -> bool {
    if pods.iter().any(|p| p.deleted_by.is_some_and(|t| t <= now)) {
        return false;
    }
    if age < DRAIN_LIST_STANDS {
        return true;
    }
    age < DRAIN_LIST_TERMINATING_STANDS
        && pods.iter().any(|p| p.terminating())
        && !pods.iter().any(|p| p.needs_eviction())
}

/// The pods a pass knows before it lists its draining nodes: the waiting nodes' and the
/// standing lists it already holds, and each of `draining`'s last list however old.
/// None when one of `draining` has no list at all (its pending evictions are unknown).
fn last_lists(
    held: &[Arc<PodSnapshot>],
    standing: &[Arc<PodSnapshot>],
    draining: &[String],
    drain_lists: &PodCache,
) -> Option<Vec<Arc<PodSnapshot>>> {
    let mut known: Vec<Arc<PodSnapshot>> = held.to_vec();
    known.extend(standing.iter().cloned());
    for name in draining {
        known.extend(drain_lists.get(name)?.1.iter().cloned());
    }
    Some(known)
}

/// How many pod lists a pass has in flight at once.
const POD_LISTS_AT_ONCE: usize = 32;

/// How many nodes next in line are listed ahead at once: reads that no step waits for,
/// kept few beside the passes' own.
const LISTS_AHEAD_AT_ONCE: usize = 8;

/// How long a node listed ahead is not listed ahead again.
const LISTED_AHEAD_FOR: Duration = Duration::from_secs(10);

/// Passes start at least this long after the last one ended when a change wakes them,
/// so a burst of changes (a wave of nodes acknowledging, the pass's own writes coming
/// back) is taken in one pass.
const PASS_GAP: Duration = Duration::from_millis(200);

/// How long a change that comes after a quiet spell waits for the rest of its burst.
const BURST: Duration = Duration::from_millis(20);

/// How long after a terminating pod's deletion timestamp a drain waiting for it looks
/// again: the time its deletion takes to reach the API server once its grace period ends.
const POD_GONE_MARGIN: Duration = Duration::from_millis(200);

/// How long past its deletion timestamp a pod a drain waits for is looked for every
/// [`OVERDUE_LOOK`] (see [`drydock_core::snapshot::overdue`]); after that, every drain
/// poll.
const OVERDUE_WINDOW: Duration = Duration::from_secs(3);

/// How soon after a pass a drain looks again for an overdue pod.
const OVERDUE_LOOK: Duration = Duration::from_millis(250);

/// How many times a pass lists the pods the plan asks for and plans again.
const LIST_ROUNDS: usize = 3;

/// How many nodes a pass writes to at once (each node's own steps stay in order). A node
/// patch took the API server 0.1 s at the median in a 5,000-node rollout, so 16 at once
/// capped a pass at about 160 writes a second where a round of 1,000 nodes needs about
/// 4,400. With 64, grant to Rebooting mark took 15.0, 11.1 and 13.2 s on average against
/// 16.1 s, the 5,000-node rollout 317.8, 458.9 and 405.4 s against 374.7-491.1 s in
/// three runs with 16, the 1,000-node one 153.0 and 162.3 s against 156.3-161.3 s: all
/// inside the spread between runs, and up to 3.5 MiB more at the peak. What the steps
/// wait for at 5,000 nodes is the passes themselves (12 s each, see
/// `docs/benchmarks.md`, twelfth set), not the write rate.
const NODES_AT_ONCE: usize = 64;

/// How many nodes leaving their disruption a pass writes before it plans again and starts
/// the disruptions their slots allow. Each batch costs a plan, the candidates' pod lists
/// and a round of writes: with batches of 16, a pass of 80 completions at 1,000 nodes
/// took 3 s and wrote the last of them up to 2.5 s after its agent reported; with
/// batches of 64 the completions were written sooner (0.92 s mean from the agent's
/// report, against 1.44 s) but the first freed slots were refilled later (reaction p99
/// 1.48 s against 0.81 s), and the rollout took as long (158.4 s against 159.1 s). At
/// 5,000 nodes with 64 nodes written at once, batches of an eighth of the nodes freed
/// (about 125 in a round of 1,000) made the passes longer, not fewer waits: half the
/// passes, grant to Rebooting mark 17-24 s against 10-15 s, reaction p50 1.47 s against
/// 0.41-0.67 s. Stopping the batches 5 s into a pass and leaving the refill to the next
/// pass cut the passes to 3.0 s on average and a slot's excess to 35.4 s against 52.3 s,
/// but a freed slot then waited for a whole pass of candidates' lists: reaction p50 10.9
/// s, p99 24.4 s. Not kept.
const FREEING_AT_ONCE: usize = 16;

/// How many of the follow-ups' Events are being recorded at once.
const EVENTS_AT_ONCE: usize = 8;

/// How many of the follow-ups' evictions and deletions are in flight at once. An eviction
/// waiting for its budget's turn holds none of these, so the budgets with evictions queued
/// share them. Each eviction is several reads and three writes on the API server (the
/// budget's status, the pod's condition, its deletion): at 1,000 nodes it served about
/// 23 a second whether 10 or 20 were in flight, and with 32 allowed the drains that
/// refill freed slots waited longer for their own writes (reaction p99 0.81–1.48 s in six
/// runs, against 0.76 s with 8).
const EVICTIONS_AT_ONCE: usize = 8;

/// How many follow-ups are under way at once (waiting for a turn or a slot included);
/// the rest wait in the queue as plain data. A follow-up under way holds its future's
/// state: with no bound, the 5,000-node rollout (waves of 1,000 drains) peaked at
/// 58.6 MiB against 55.6 MiB with 16 follow-ups at a time.
const FOLLOW_UPS_RUNNING: usize = 64;

/// At most this many waiting nodes get what they show (phase, reason) written per pass;
/// the rest are written in the passes that follow at once.
const WAITING_WRITES_PER_PASS: usize = 256;

/// What an Event about a node names as its object. A pass acts on nodes as it read
/// them ([`ReadNode`]: name, UID and drydock state), not on the cache's Nodes: a pass
/// lasts seconds on a large fleet and the cache takes new versions meanwhile, so holding
/// its Nodes through the pass would keep two versions of every node that changed.
fn node_ref(n: &NodeSnapshot) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(n.name.clone()),
        uid: Some(n.uid.clone()),
        ..ObjectReference::default()
    }
}

/// What a pass leaves for the passes after it: their timing, and nodes to list ahead.
#[derive(Default)]
struct PassEnd {
    /// When the plan asks to be made again (a window opens, a timeout ends).
    wake: Option<Instant>,
    /// Whether a drain is under way (the next pass polls it).
    draining: bool,
    /// When the first of the draining nodes' terminating pods should be gone.
    pods_due: Option<Instant>,
    /// Whether one of them is already past its time ([`OVERDUE_WINDOW`]).
    overdue: bool,
    /// Nodes next in line whose pods to list ahead ([`planner::Plan::list_ahead`]).
    list_ahead: Vec<String>,
}

/// A waiting node's new operator state, to be written.
struct WaitingWrite {
    node: Arc<ReadNode>,
    next: OperatorState,
    /// The channel this write gives the node, if it gives one (an Event tells it).
    channel_set: Option<String>,
    /// Order among the pass's waiting writes: 0 goes first.
    rank: u8,
    /// The planner's code for why the node waits (the write's cause names it).
    code: planner::ReasonCode,
}

/// What an action leaves to do once its node is written: the Events a person follows on
/// `kubectl describe node`, and its drain's evictions or deletions. None of it takes or
/// frees a slot, and no later plan of the pass reads it (a draining node's pods that are
/// not yet evicted count against their budgets either way), so the pass goes on to its
/// next plan and batch of node writes while these run, and waits for them at its end.
struct FollowUp {
    node: Arc<ReadNode>,
    pool: String,
    events: Vec<transition::NodeEvent>,
    evict: Vec<PodRef>,
    delete: Vec<PodRef>,
    grace: Option<u64>,
}

/// The follow-ups' turns. One lock per PodDisruptionBudget (`namespace/name`), so that
/// evictions under one budget go one at a time: the API server's eviction handler
/// updates the budget's status with optimistic concurrency and, on a conflict, sleeps
/// 500 ms and tries again, so two evictions under one budget at once cost one of them
/// half a second where in turn each takes a round trip. Evictions under different
/// budgets still run side by side. And one lock per node, so that a node's Events are
/// recorded in the order of its actions.
#[derive(Default)]
struct Locks {
    budgets: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    nodes: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Locks {
    /// The lock of `budget`, if the pod has one.
    fn budget(&self, budget: Option<&str>) -> Option<Arc<tokio::sync::Mutex<()>>> {
        Some(Self::of(&self.budgets, budget?))
    }

    /// The lock of a node's Events.
    fn node(&self, node: &str) -> Arc<tokio::sync::Mutex<()>> {
        Self::of(&self.nodes, node)
    }

    fn of(
        map: &std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
        key: &str,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Locks no one holds or waits for are dropped as new ones come.
        if locks.len() > 1024 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        Arc::clone(locks.entry(key.to_string()).or_default())
    }
}

/// The follow-ups' request slots: Events and evictions (or deletions) apart, so that a
/// wave's Events do not hold up its evictions. A slot is taken only for the request
/// itself, after any turn it waits for.
struct Slots {
    events: tokio::sync::Semaphore,
    evictions: tokio::sync::Semaphore,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            events: tokio::sync::Semaphore::new(EVENTS_AT_ONCE),
            evictions: tokio::sync::Semaphore::new(EVICTIONS_AT_ONCE),
        }
    }
}

/// Runs the request `ask` makes (an eviction under `budget`, or a deletion under none)
/// in its budget's turn and with an eviction slot, taken in that order: a request
/// waiting for its turn holds no slot. The request is made, and boxed, only once both
/// are held, so a queued request holds only these waits, not its request's and Event's
/// state: a rollout with 5 pods per node queues hundreds of evictions, of which only
/// [`EVICTIONS_AT_ONCE`] are sent at a time (3.3 MB of an 18.5 MB peak heap at 1,000
/// nodes before, see the seventeenth set in `docs/benchmarks.md`).
async fn in_turn<T, F: std::future::Future<Output = T>>(
    locks: &Locks,
    slots: &Slots,
    budget: Option<&str>,
    ask: impl FnOnce() -> F,
) -> T {
    let lock = locks.budget(budget);
    let _turn = match &lock {
        Some(l) => Some(l.lock().await),
        None => None,
    };
    let _slot = slots.evictions.acquire().await;
    Box::pin(ask()).await
}

/// How long a pod whose eviction was accepted is not evicted again: until the lists of
/// the passes that follow show it terminating.
const EVICTED_HOLD: Duration = Duration::from_secs(2);

/// Pods (by UID) that no plan may evict or delete now: those queued or under way in a
/// follow-up, those just evicted (for [`EVICTED_HOLD`]), and those whose eviction was
/// refused, until the time the refusal gave (`Retry-After`). Shared by the passes and the
/// follow-ups; only the refusals wake a pass.
#[derive(Default)]
struct PodHolds(std::sync::Mutex<PodHoldsInner>);

#[derive(Default)]
struct PodHoldsInner {
    /// Queued or under way.
    busy: HashSet<String>,
    /// Done or refused: held until then.
    until: HashMap<String, Instant>,
    /// Refused: when to ask again (a pass wakes then).
    retry: HashMap<String, Instant>,
}

impl PodHolds {
    fn inner(&self) -> std::sync::MutexGuard<'_, PodHoldsInner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `uid` may not be evicted now.
    fn held(&self, uid: &str, now: Instant) -> bool {
        let h = self.inner();
        h.busy.contains(uid) || h.until.get(uid).is_some_and(|t| *t > now)
    }

    /// Those of `pods` no plan holds at `now`.
    fn free(&self, pods: &[PodRef], now: Instant) -> Vec<PodRef> {
        pods.iter()
            .filter(|pod| !self.held(&pod.uid, now))
            .cloned()
            .collect()
    }

    /// A follow-up will evict or delete `uid`.
    fn hold(&self, uid: &str) {
        self.inner().busy.insert(uid.to_string());
    }

    /// Its eviction or deletion was made (or failed): held a little longer, so a list
    /// made before it does not evict it again.
    fn done(&self, uid: &str, now: Instant) {
        let mut h = self.inner();
        h.busy.remove(uid);
        h.until.insert(uid.to_string(), now + EVICTED_HOLD);
    }

    /// Not done after all (leadership lost): free for whoever plans next.
    fn release(&self, uid: &str) {
        self.inner().busy.remove(uid);
    }

    /// Its eviction was refused: asked again at `at`.
    fn retry_at(&self, uid: String, at: Instant) {
        let mut h = self.inner();
        h.busy.remove(&uid);
        h.until.insert(uid.clone(), at);
        h.retry.insert(uid, at);
    }

    /// The earliest refused eviction to ask again after `now`; forgets what is past.
    fn next_retry(&self, now: Instant) -> Option<Instant> {
        let mut h = self.inner();
        h.until.retain(|_, t| *t > now);
        h.retry.retain(|_, t| *t > now);
        h.retry.values().min().copied()
    }
}

/// The sending end a pass's actions hand their follow-ups to.
type FollowUps = tokio::sync::mpsc::UnboundedSender<FollowUp>;

/// A node's pods listed ahead of need, with when, for the passes' [`PodCache`].
type ListedAhead = (String, Instant, Vec<Arc<PodSnapshot>>);

/// Pods per node as last listed, for nodes that wait their turn.
type PodCache = HashMap<String, (Instant, Vec<Arc<PodSnapshot>>)>;

/// Whether a node's pods may come from [`PodCache`]: it waits its turn.
fn waits_its_turn(n: &NodeSnapshot) -> bool {
    let phase = n.labels.get(keys::PHASE).unwrap_or("Idle");
    matches!(phase, "Idle" | "Queued" | "Done")
}

/// Field manager of every operator write.
pub const FIELD_MANAGER: &str = "drydock-operator";
/// The ConfigMap key holding the policy.
pub const CONFIG_KEY: &str = "config.yaml";
/// Annotation on the ConfigMap that carries the reason it was rejected.
pub const CONFIG_ERROR_ANNOTATION: &str = "drydock.dev/config-error";

/// The policy in force and what the ConfigMap last said.
#[derive(Debug, Clone)]
pub struct PolicyState {
    /// The last good policy (the defaults until a ConfigMap is read).
    pub policy: Policy,
    /// The rejected ConfigMap's resourceVersion and errors, if the current one is bad.
    pub rejected: Option<(String, String)>,
    /// Whether the current ConfigMap (or its absence) is in force.
    pub source: String,
    /// Whether the ConfigMap watch has delivered its first answer: nothing may be planned
    /// before (the defaults would apply to a fleet the ConfigMap pauses).
    pub loaded: bool,
}

/// The caches and signals every replica keeps, leader or not.
#[derive(Clone)]
pub struct Fleet {
    /// Nodes, each read once per change ([`FleetNode`]).
    pub nodes: Store<FleetNode>,
    /// Budgets.
    pub pdbs: Store<PodDisruptionBudget>,
    /// Policy.
    pub policy: watch::Receiver<PolicyState>,
    /// Poked on every relevant change.
    pub changed: Arc<Notify>,
    /// Nodes past their drain that changed, for the leader's steps.
    pub touched: Arc<Touched>,
}

fn parse_config(cm: &ConfigMap) -> Result<Policy, String> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .ok_or_else(|| format!("the ConfigMap has no data key {CONFIG_KEY:?}"))?;
    Policy::from_yaml(text).map_err(|e| e.to_string())
}

/// Starts the watches; returns the caches and a future per watch to drive.
pub fn watch_fleet(
    client: &kube::Client,
    namespace: &str,
    config_map: &str,
) -> (Fleet, Vec<futures_util::future::BoxFuture<'static, ()>>) {
    let changed = Arc::new(Notify::new());
    let (nodes_r, nodes_w) = reflector::store::<FleetNode>();
    let (pdbs_r, pdbs_w) = reflector::store::<PodDisruptionBudget>();
    // The caches keep what the planner and the endpoints read, nothing else: a Node is
    // decoded straight into its reading ([`FleetNode`]), so memory per node stays small
    // and a node is parsed once per change.
    let node_stream = reflector::reflector(
        nodes_w,
        watcher(
            Api::<FleetNode>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let pdb_stream = reflector::reflector(
        pdbs_w,
        watcher(
            Api::<PodDisruptionBudget>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(|b| b.metadata.managed_fields = None),
    )
    .default_backoff()
    .touched_objects();
    let (policy_tx, policy_rx) = watch::channel(PolicyState {
        policy: Policy::default(),
        rejected: None,
        source: "defaults (no ConfigMap yet)".into(),
        loaded: false,
    });
    let cm_stream = watcher(
        Api::<ConfigMap>::namespaced(client.clone(), namespace),
        watcher::Config::default().fields(&format!("metadata.name={config_map}")),
    )
    .default_backoff();
    let n1 = changed.clone();
    let touched = Arc::new(Touched::default());
    let t1 = touched.clone();
    let nodes_fut = async move {
        let mut s = std::pin::pin!(node_stream);
        while let Some(ev) = s.next().await {
            match ev {
                Ok(node) => {
                    if let Some(read) = node.read()
                        && planner::is_past_drain(read.state().operator.phase())
                    {
                        t1.add(&read.name);
                    }
                }
                Err(e) => warn!(error = %e, "watching nodes"),
            }
            n1.notify_one();
        }
    };
    let n2 = changed.clone();
    let pdbs_fut = async move {
        let mut s = std::pin::pin!(pdb_stream);
        while let Some(ev) = s.next().await {
            if let Err(e) = ev {
                warn!(error = %e, "watching PodDisruptionBudgets");
            }
            n2.notify_one();
        }
    };
    let n3 = changed.clone();
    let cm_fut = async move {
        let mut s = std::pin::pin!(cm_stream);
        while let Some(ev) = s.next().await {
            let cm = match ev {
                Ok(watcher::Event::Apply(cm)) | Ok(watcher::Event::InitApply(cm)) => Some(cm),
                Ok(watcher::Event::Delete(_)) => None,
                Ok(watcher::Event::InitDone) => {
                    policy_tx.send_modify(|st| st.loaded = true);
                    n3.notify_one();
                    continue;
                }
                Ok(watcher::Event::Init) => continue,
                Err(e) => {
                    warn!(error = %e, "watching the ConfigMap");
                    continue;
                }
            };
            policy_tx.send_modify(|st| match cm {
                None => {
                    st.policy = Policy::default();
                    st.rejected = None;
                    st.source = "defaults (the ConfigMap was deleted)".into();
                }
                Some(cm) => {
                    let rv = cm.metadata.resource_version.clone().unwrap_or_default();
                    match parse_config(&cm) {
                        Ok(p) => {
                            info!(resource_version = %rv, "policy accepted");
                            st.policy = p;
                            st.rejected = None;
                            st.source = format!("ConfigMap resourceVersion {rv}");
                        }
                        Err(e) => {
                            warn!(resource_version = %rv, errors = %e, "policy rejected; keeping the last good one");
                            st.rejected = Some((rv, e));
                        }
                    }
                }
            });
            n3.notify_one();
        }
    };
    (
        Fleet {
            nodes: nodes_r,
            pdbs: pdbs_r,
            policy: policy_rx,
            changed,
            touched,
        },
        vec![Box::pin(nodes_fut), Box::pin(pdbs_fut), Box::pin(cm_fut)],
    )
}

/// What the leader needs.
pub struct Leader {
    /// API client (no automatic 429 retries).
    pub client: kube::Client,
    /// The caches.
    pub fleet: Fleet,
    /// Leadership; every write checks it.
    pub leading: watch::Receiver<bool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Events.
    pub events: Arc<Publisher>,
    /// Operator namespace (for the ConfigMap).
    pub namespace: String,
    /// ConfigMap name.
    pub config_map: String,
    /// Re-plan this often while a drain waits for pods.
    pub drain_poll: Duration,
    /// Which of the passes and the steps may write which node now (empty at first).
    pub claims: Claims,
}

/// Creates the Event publisher of replica `identity`.
pub fn events(client: &kube::Client, identity: &str) -> Arc<Publisher> {
    Arc::new(Publisher::new(client.clone(), FIELD_MANAGER, identity))
}

#[derive(Debug, thiserror::Error)]
enum ActError {
    #[error("not leading")]
    NotLeading,
    /// The node is being written by the other side, or was written since this side read
    /// it ([`Claims`]): whoever reads it next decides.
    #[error("the node was claimed by another writer")]
    Claimed,
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// Whether the plan reads the node's pods: it drains (what is left to evict, which
/// budgets its evictions use), or it has an update staged and waits its turn (what its
/// drain would need). A node granted its reboot, rebooting or verifying has no use for
/// them, nor has one Held, Failed or up to date.
fn needs_pods(n: &NodeSnapshot) -> bool {
    let phase = n.labels.get(keys::PHASE).unwrap_or("Idle");
    let staged = n
        .labels
        .get(keys::REBOOT_NEEDED)
        .is_some_and(|v| v == "true");
    phase == "Draining" || (staged && waits_its_turn(n))
}

/// Whether `a` ends its node's disruption (Done, Held, Failed from a disrupting phase):
/// it frees a slot of the node's pool.
fn frees(a: &PlannedAction, snapshot: &Snapshot) -> bool {
    !a.action.next_phase().is_disrupting() && is_disrupted(&a.node, snapshot)
}

/// Whether `a` starts its node's disruption: it takes a slot of the node's pool.
fn starts(a: &PlannedAction, snapshot: &Snapshot) -> bool {
    a.action.next_phase().is_disrupting() && !is_disrupted(&a.node, snapshot)
}

/// Whether `a` drains its node (the pass then polls the drain).
fn drains(a: &PlannedAction) -> bool {
    matches!(a.action, Action::Drain { .. } | Action::ForceDrain { .. })
}

/// The wording a drain under way keeps while its new one settles: `Some` (the wording
/// written) when `a` continues a drain and would change nothing on its node but the
/// sentence of a reason that follows its pods ("5 pod(s) left to evict", then 4), with
/// the same code as before; `None` when `a` is written as planned.
fn held_wording(a: &PlannedAction, state: &NodeState, now: Timestamp) -> Option<String> {
    let op = &state.operator;
    if !matches!(a.action, Action::Drain { start: false, .. })
        || op.phase() != Phase::Draining
        || op.reason_code.as_deref() != Some(a.reason.code.as_str())
        || !planner::ReasonCode::FOLLOWS_THE_FLEET.contains(&a.reason.code)
    {
        return None;
    }
    let next = transition::after_action(state, a, now);
    if next == *op {
        return None;
    }
    let kept = OperatorState {
        reason: op.reason.clone(),
        ..next
    };
    if kept == *op { op.reason.clone() } else { None }
}

/// Whether `a` is a disrupted node's next step that neither frees nor takes a slot nor
/// evicts (a grant, the record of a reboot, a verification): it depends on that node alone.
fn is_step(a: &PlannedAction, snapshot: &Snapshot) -> bool {
    is_disrupted(&a.node, snapshot) && !frees(a, snapshot) && !drains(a)
}

fn is_disrupted(node: &str, snapshot: &Snapshot) -> bool {
    snapshot
        .node_index(node)
        .is_some_and(|i| snapshot.nodes()[i].state().operator.phase().is_disrupting())
}

/// Puts what the writes in `acted` returned in place of the nodes' readings in
/// `node_snaps`, and keeps them until the cache has seen them; returns how many nodes
/// were written.
fn take_written(
    acted: &HashMap<String, Option<FleetNode>>,
    node_snaps: &mut [Arc<ReadNode>],
    own_writes: &mut OwnWrites,
) -> usize {
    let mut n = 0;
    for written in acted.values().flatten() {
        own_writes.record(written);
        n += 1;
    }
    if n > 0 {
        for snap in node_snaps.iter_mut() {
            if let Some(Some(written)) = acted.get(&snap.name)
                && let Some(read) = written.read()
            {
                *snap = Arc::clone(read);
            }
        }
    }
    n
}

impl Leader {
    fn check_leading(&self) -> Result<(), ActError> {
        if *self.leading.borrow() {
            Ok(())
        } else {
            Err(ActError::NotLeading)
        }
    }

    async fn event(&self, node: &NodeSnapshot, severity: Severity, reason: &str, note: String) {
        let kind = match severity {
            Severity::Normal => Kind::Normal,
            Severity::Warning => Kind::Warning,
        };
        if let Err(e) = self
            .events
            .publish(&node_ref(node), kind, reason, &note)
            .await
        {
            warn!(error = %e, reason, "cannot record an Event");
        }
    }

    /// Applies `op` as the node's operator state (labels, annotations, cordon), counted
    /// under `cause`.
    async fn write(
        &self,
        name: &str,
        op: &OperatorState,
        cause: &str,
        who: Writer,
    ) -> Result<FleetNode, ActError> {
        self.check_leading()?;
        let claim = self.claims.claim(name, who).ok_or(ActError::Claimed)?;
        let (annotations, labels) = op.to_metadata();
        let mut patch = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "annotations": annotations, "labels": labels},
        });
        if op.cordoned {
            patch["spec"] = serde_json::json!({"unschedulable": true});
        }
        // The reply (the node as written) is decoded and read as the cache's nodes are.
        let nodes: Api<FleetNode> = Api::all(self.client.clone());
        let written = nodes
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await;
        claim.written(written.as_ref().ok());
        written
            .inspect(|_| self.metrics.node_written(cause))
            .map_err(|e| {
                self.metrics.write_error();
                ActError::Api(e)
            })
    }

    /// Lists the pods on `nodes` for `purpose` (`candidate`, `draining`), a few at a time
    /// (the lists are independent reads), and keeps each node's list in `keep`, stamped
    /// with when it was asked for: a waiting node's in the pod cache, a draining node's
    /// in the lists that stand for a moment (`DRAIN_LIST_STANDS`). Each node's list is
    /// whole when kept, even if another node's fails.
    async fn list_pods(
        &self,
        nodes: Vec<String>,
        purpose: &'static str,
        keep: &mut PodCache,
    ) -> Result<Vec<Arc<PodSnapshot>>, kube::Error> {
        let mut lists = futures_util::stream::iter(nodes.into_iter().map(|name| async move {
            let at = Instant::now();
            (self.pods_on(&name, purpose).await, name, at)
        }))
        .buffer_unordered(POD_LISTS_AT_ONCE);
        let mut out = Vec::new();
        while let Some((pods, name, at)) = lists.next().await {
            let listed = pods?;
            out.extend(listed.iter().cloned());
            keep.insert(name, (at, listed));
        }
        Ok(out)
    }

    /// The pods on `node`, as read (a pod that cannot be read is skipped and logged).
    async fn pods_on(
        &self,
        node: &str,
        purpose: &'static str,
    ) -> Result<Vec<Arc<PodSnapshot>>, kube::Error> {
        self.metrics.pods_listed(purpose);
        let pods: Api<FleetPod> = Api::all(self.client.clone());
        let items = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await?
            .items;
        let mut listed = Vec::with_capacity(items.len());
        for p in items {
            match p.into_read() {
                Ok(s) => listed.push(Arc::new(s)),
                Err(e) => warn!(error = %e, "skipping a pod"),
            }
        }
        Ok(listed)
    }

    /// Reports a rejected ConfigMap once per version: a Warning Event on it and the
    /// errors in its `drydock.dev/config-error` annotation (cleared when a good one comes).
    async fn report_config(&self, reported: &mut Option<String>) {
        let st = self.fleet.policy.borrow().clone();
        // Keyed by the errors, not the resourceVersion: annotating the ConfigMap makes a
        // new version of the same bad policy.
        let key = st.rejected.as_ref().map(|(_, errors)| errors.clone());
        if *reported == key {
            return;
        }
        if self.check_leading().is_err() {
            return;
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let annotations = match &st.rejected {
            Some((_, errors)) => {
                serde_json::json!({CONFIG_ERROR_ANNOTATION: format!("rejected; the previous policy stays in force: {errors}")})
            }
            None => serde_json::json!({}),
        };
        let patch = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.config_map, "namespace": self.namespace, "annotations": annotations},
        });
        match api
            .patch(
                &self.config_map,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(cm) => {
                if let Some((_, errors)) = &st.rejected {
                    self.metrics.config(true);
                    let note = format!("{errors}; the previous policy stays in force");
                    if let Err(e) = self
                        .events
                        .publish(&cm.object_ref(&()), Kind::Warning, "ConfigRejected", &note)
                        .await
                    {
                        warn!(error = %e, "cannot record the ConfigRejected Event");
                    }
                } else {
                    self.metrics.config(false);
                }
                *reported = key;
            }
            // No ConfigMap: nothing to annotate.
            Err(kube::Error::Api(s)) if s.code == 404 => *reported = key,
            Err(e) => warn!(error = %e, "cannot report the ConfigMap's state on it"),
        }
    }

    /// Follows each node past its drain as its watch events come, until leadership is
    /// lost: the acknowledged reboot recorded, the verified boot completed or verified,
    /// the rollback failed, each written a watch event after the agent's report rather
    /// than at the next pass ([`planner::step`]). None of these takes a slot or evicts, so
    /// nothing but the node itself decides them; [`Claims`] keeps the passes and the
    /// steps off each other's nodes. Time-driven steps (deadlines, bake ends) stay with
    /// the passes.
    async fn steps(&self, pods: &PodHolds, follow: FollowUps) {
        let touched = &self.fleet.touched;
        // What changed before this leadership is the first pass's.
        touched.take();
        let mut leading = self.leading.clone();
        let mut queue: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        // The names in `queue`: each is looked at once, on the cache as it is then.
        let mut queued: HashSet<String> = HashSet::new();
        let mut running = futures_util::stream::FuturesUnordered::new();
        loop {
            while running.len() < NODES_AT_ONCE
                && let Some(name) = queue.pop_front()
            {
                queued.remove(&name);
                let follow = &follow;
                running.push(async move { self.step(&name, pods, follow).await });
            }
            tokio::select! {
                _ = touched.added.notified() => {
                    for name in touched.take() {
                        if queued.insert(name.clone()) {
                            queue.push_back(name);
                        }
                    }
                }
                Some(()) = running.next(), if !running.is_empty() => {}
                _ = leading.changed() => {
                    if !*leading.borrow_and_update() {
                        break;
                    }
                }
            }
        }
    }

    /// One node's step, if it has one now (see [`Self::steps`]).
    async fn step(&self, name: &str, pods: &PodHolds, follow: &FollowUps) {
        let Some(cached) = self.fleet.nodes.get(&reflector::ObjectRef::new(name)) else {
            return;
        };
        let Some(read) = cached.read() else {
            return;
        };
        let cache_rv = crate::own_writes::version_of(&cached);
        let policy = self.fleet.policy.borrow().policy.clone();
        let now = Timestamp::now();
        let Some(action) = planner::step(read, &policy, now) else {
            return;
        };
        let acted = self
            .act_on_read(
                vec![(&action, read)],
                &policy,
                now,
                pods,
                follow,
                Writer::Step { cache_rv },
            )
            .await;
        if let Ok(done) = acted
            && done.values().any(Option::is_some)
        {
            self.metrics.stepped(action.action.name());
            if !action.action.next_phase().is_disrupting() {
                self.claims.freed.notify_one();
            }
        }
    }

    /// Runs passes until leadership is lost, with the actions' follow-ups beside them.
    pub async fn lead(self) {
        let pods = PodHolds::default();
        let (follow, queued) = tokio::sync::mpsc::unbounded_channel();
        let (ask, asked) = tokio::sync::mpsc::unbounded_channel();
        let (give, given) = tokio::sync::mpsc::unbounded_channel();
        tokio::join!(
            self.steps(&pods, follow.clone()),
            self.passes(&pods, follow, ask, given),
            self.follow_ups(queued, &pods),
            self.lists_ahead(asked, give),
        );
    }

    /// The passes: each reads, plans and writes the nodes, and hands what its actions
    /// leave to do to `follow`, without waiting for it.
    /// Nodes next in line are listed ahead by [`Self::lists_ahead`]: asked for on `ask`,
    /// their lists taken from `given` at each pass's start.
    async fn passes(
        &self,
        pods: &PodHolds,
        follow: FollowUps,
        ask: tokio::sync::mpsc::UnboundedSender<Vec<String>>,
        mut given: tokio::sync::mpsc::UnboundedReceiver<ListedAhead>,
    ) {
        let mut reported_config: Option<String> = None;
        // Channel refusals already announced (one Event per node and channel asked for).
        let mut refused: HashSet<(String, String)> = HashSet::new();
        let mut pod_cache = PodCache::new();
        let mut drain_lists = PodCache::new();
        let mut settling = Settling::default();
        let mut own_writes = OwnWrites::default();
        let mut leading = self.leading.clone();
        info!("leading: planning and acting");
        loop {
            if !*leading.borrow_and_update() {
                return;
            }
            self.report_config(&mut reported_config).await;
            while let Ok((name, at, listed)) = given.try_recv() {
                // A fresher list (the pass's own, of a candidate) stands.
                if pod_cache.get(&name).is_none_or(|(had, _)| *had < at) {
                    pod_cache.insert(name, (at, listed));
                }
            }
            let pass_started = Instant::now();
            let passed = self
                .pass(
                    pods,
                    &mut refused,
                    &mut pod_cache,
                    &mut drain_lists,
                    &mut settling,
                    &mut own_writes,
                    &follow,
                )
                .await;
            // A failed pass is timed too: its nodes waited as long.
            self.metrics.passed(pass_started.elapsed());
            let PassEnd {
                wake,
                draining,
                pods_due,
                overdue,
                list_ahead,
            } = match passed {
                Ok(x) => x,
                Err(ActError::NotLeading) => return,
                Err(e) => {
                    warn!(error = %e, "pass failed; retrying");
                    PassEnd {
                        wake: Some(Instant::now() + Duration::from_secs(2)),
                        ..PassEnd::default()
                    }
                }
            };
            if !list_ahead.is_empty() {
                // The lister lives as long as the passes.
                let _ = ask.send(list_ahead);
            }
            // When the pass ended: the gap to the next one counts from here.
            let now = Instant::now();
            let mut deadline = wake;
            if let Some(t) = pods.next_retry(now) {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
            if draining {
                // Polled, and looked at again as soon as a terminating pod should be gone.
                let mut t = pods_due.map_or(now + self.drain_poll, |due| {
                    due.max(now).min(now + self.drain_poll)
                });
                if overdue {
                    t = t.min(now + OVERDUE_LOOK);
                }
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
            // In this order when more than one is ready: a slot freed during the pass
            // is also a node changed (the step's write comes back through the watch),
            // and must not wait the gap that changes alone keep.
            tokio::select! {
                biased;
                _ = leading.changed() => {}
                _ = self.claims.freed.notified() => {
                    // A step freed a slot (during the pass or since): only a pass fills
                    // it, so the next one waits for the rest of a burst, not the gap.
                    tokio::time::sleep(BURST).await;
                }
                _ = async { match deadline { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
                _ = self.fleet.changed.notified() => {
                    // Debounce a burst of changes into one pass: a change after a quiet
                    // spell is acted on at once (but for the rest of its burst); passes
                    // that follow each other keep their gap.
                    let at = (Instant::now() + BURST).max(now + PASS_GAP);
                    tokio::time::sleep_until(at).await;
                }
            }
        }
    }

    /// Lists the pods of the nodes the passes ask for ([`planner::Plan::list_ahead`]),
    /// a few at a time, each once while it is asked for or under way and for
    /// [`LISTED_AHEAD_FOR`] after ([`Ahead`]), and gives each list back for the passes'
    /// pod cache, stamped with when it was asked for, until the passes end. A list that
    /// fails is left to the pass that needs it.
    async fn lists_ahead(
        &self,
        mut asked: tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
        give: tokio::sync::mpsc::UnboundedSender<ListedAhead>,
    ) {
        let mut ahead = Ahead::new(LISTED_AHEAD_FOR);
        let mut queue: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let mut running = futures_util::stream::FuturesUnordered::new();
        loop {
            while running.len() < LISTS_AHEAD_AT_ONCE
                && let Some(name) = queue.pop_front()
            {
                running.push(async move {
                    let at = Instant::now();
                    (self.pods_on(&name, "ahead").await, name, at)
                });
            }
            tokio::select! {
                names = asked.recv() => match names {
                    Some(names) => queue.extend(ahead.to_list(names, Instant::now())),
                    None => break,
                },
                Some((listed, name, at)) = running.next(), if !running.is_empty() => {
                    match listed {
                        Ok(pods) => {
                            ahead.ended(&name, Some(at));
                            let _ = give.send((name, at, pods));
                        }
                        Err(e) => {
                            ahead.ended(&name, None);
                            debug!(node = %name, error = %e, "listing ahead failed");
                        }
                    }
                }
            }
        }
    }

    /// Runs follow-ups as the passes hand them over, each as soon as it comes, until the
    /// passes end (leadership lost). Their requests are bounded ([`Slots`]), not the
    /// follow-ups: one waiting for a budget's turn or a node's Events holds no slot. Each
    /// one's outcome goes to `pods`.
    async fn follow_ups(
        &self,
        mut queued: tokio::sync::mpsc::UnboundedReceiver<FollowUp>,
        pods: &PodHolds,
    ) {
        let locks = Locks::default();
        let slots = Slots::default();
        let mut running = futures_util::stream::FuturesUnordered::new();
        loop {
            tokio::select! {
                f = queued.recv(), if running.len() < FOLLOW_UPS_RUNNING => match f {
                    Some(f) => running.push(self.follow_up(f, &locks, &slots, pods)),
                    None => break,
                },
                Some(()) = running.next(), if !running.is_empty() => {}
            }
        }
        while running.next().await.is_some() {}
    }

    /// An action's Events (in the order its node's actions came) beside its evictions or
    /// deletions (all at once, but one at a time per budget: see [`Locks`]). Nothing is
    /// done once leadership is lost.
    async fn follow_up(&self, f: FollowUp, locks: &Locks, slots: &Slots, pods: &PodHolds) {
        let events = async {
            let lock = locks.node(&f.node.name);
            let _turn = lock.lock().await;
            for e in &f.events {
                if self.check_leading().is_err() {
                    return;
                }
                let _slot = slots.events.acquire().await;
                self.event(&f.node, e.severity, e.reason, e.note.clone())
                    .await;
            }
        };
        // A node's pods go side by side, as `kubectl drain` evicts them: each waits only
        // for its own budget's turn and a slot.
        let f = &f;
        let evictions = futures_util::future::join_all(f.evict.iter().map(|pod| async move {
            let asked = in_turn(locks, slots, pod.pdb.as_deref(), || async {
                // Asked after the waits: leadership may have gone meanwhile.
                if self.check_leading().is_err() {
                    return None;
                }
                Some(self.evict(&f.node, &f.pool, pod, f.grace).await)
            })
            .await;
            match asked {
                None => pods.release(&pod.uid),
                Some(Some((uid, at))) => {
                    pods.retry_at(uid, at);
                    // The passes' next wake must count this retry.
                    self.fleet.changed.notify_one();
                }
                Some(None) => pods.done(&pod.uid, Instant::now()),
            }
        }));
        // A forced drain's deletions take slots as evictions do; no budget has a say.
        let deletions = futures_util::future::join_all(f.delete.iter().map(|pod| async move {
            let asked = in_turn(locks, slots, None, || async {
                if self.check_leading().is_err() {
                    return None;
                }
                Some(drain::delete(&self.client, pod, f.grace).await)
            })
            .await;
            match asked {
                None => return pods.release(&pod.uid),
                Some(Ok(Evicted::Refused { status, message })) => {
                    warn!(pod = %pod.name, status, %message, "delete refused")
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => warn!(error = %e, "delete failed"),
            }
            pods.done(&pod.uid, Instant::now());
        }));
        tokio::join!(events, evictions, deletions);
    }

    /// One pass: its plans and writes; returns what the next pass's timing needs. Each
    /// action's follow-up goes to `follow`, its pods held in `pods` until it is done.
    #[allow(clippy::too_many_arguments)]
    async fn pass(
        &self,
        pods: &PodHolds,
        refused: &mut HashSet<(String, String)>,
        pod_cache: &mut PodCache,
        drain_lists: &mut PodCache,
        settling: &mut Settling,
        own_writes: &mut OwnWrites,
        follow: &FollowUps,
    ) -> Result<PassEnd, ActError> {
        let policy = self.fleet.policy.borrow().policy.clone();
        // The steps' writes since the last pass are read as the pass's own; a step that
        // writes a node after this reading point has the node to itself until the next
        // pass (see claims.rs).
        let (since, stepped) = self.claims.pass_starts();
        for n in &stepped {
            own_writes.record(n);
        }
        let who = Writer::Pass { since };
        // The cache's nodes are taken here and let go before the first await: from here
        // on the pass holds each node's reading (shared with the cache while the node
        // does not change), not the cache's entries.
        let mut node_snaps = Vec::new();
        let mut pod_snaps = Vec::new();
        // Draining nodes are listed now; a node waiting its turn is listed only when the
        // plan asks (it is a candidate to drain next) and its last list is too old.
        let mut draining_nodes: Vec<String> = Vec::new();
        let mut unlisted_names: Vec<String> = Vec::new();
        {
            let nodes = self.fleet.nodes.state();
            node_snaps.reserve(nodes.len());
            for fleet_node in &nodes {
                // The leader's own latest write where the cache has not seen it yet.
                let Some(n) = own_writes.freshest(fleet_node) else {
                    warn!("skipping a node without a name");
                    continue;
                };
                node_snaps.push(n);
            }
        }
        let mut turn_waiters: HashSet<&str> = HashSet::new();
        // Draining nodes' pods from a list that still stands (`drain_list_stands`).
        let mut standing: Vec<Arc<PodSnapshot>> = Vec::new();
        let mut draining_now: HashSet<&str> = HashSet::new();
        let read_at = Timestamp::now();
        for n in &node_snaps {
            let name = n.name.as_str();
            let waits = waits_its_turn(n);
            if waits {
                turn_waiters.insert(name);
            }
            if !needs_pods(n) {
                continue;
            }
            if !waits {
                draining_now.insert(name);
                match drain_lists
                    .get(name)
                    .filter(|(at, pods)| drain_list_stands(pods, at.elapsed(), read_at))
                {
                    Some((_, pods)) => standing.extend(pods.iter().cloned()),
                    None => draining_nodes.push(name.to_string()),
                }
                continue;
            }
            match pod_cache
                .get(name)
                .filter(|(at, _)| at.elapsed() < WAITING_PODS_TTL)
            {
                Some((_, pods)) => pod_snaps.extend(pods.iter().cloned()),
                None => unlisted_names.push(name.to_string()),
            }
        }
        // A node started since the last pass has its list from when it waited: it goes
        // with the draining lists (too old to stand; `start_first` plans on it).
        for name in &draining_now {
            if !drain_lists.contains_key(*name)
                && let Some(listed) = pod_cache.get(*name)
            {
                drain_lists.insert((*name).to_string(), listed.clone());
            }
        }
        // Pods kept only for nodes that still wait their turn, and not for long.
        pod_cache.retain(|name, (at, _)| {
            at.elapsed() < WAITING_PODS_TTL && turn_waiters.contains(name.as_str())
        });
        let known: HashSet<&str> = node_snaps.iter().map(|n| n.name.as_str()).collect();
        own_writes.retain(|name| known.contains(name));
        self.claims.forget_seen(since, |name| {
            let cached = self.fleet.nodes.get(&reflector::ObjectRef::new(name))?;
            // A node without a comparable version still exists: it is kept.
            crate::own_writes::version_of(&cached).or(Some(0))
        });
        drop(known);
        drop(turn_waiters);
        let mut unlisted: HashSet<&str> = unlisted_names.iter().map(String::as_str).collect();
        let pdb_snaps: Vec<_> = self
            .fleet
            .pdbs
            .state()
            .iter()
            .filter_map(|b| match drydock_core::k8s::pdb(b) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "skipping a PodDisruptionBudget");
                    None
                }
            })
            .collect();
        drain_lists.retain(|name, _| draining_now.contains(name.as_str()));
        // Slots free now are filled while the draining nodes are listed (see
        // `start_first`); the nodes started are left out of the rest of the pass.
        let known = if draining_nodes.is_empty() {
            None
        } else {
            last_lists(&pod_snaps, &standing, &draining_nodes, drain_lists)
        };
        let early = async {
            match known {
                Some(known) => {
                    self.start_first(
                        &policy,
                        Timestamp::now(),
                        &node_snaps,
                        known,
                        &pdb_snaps,
                        &unlisted,
                        pods,
                        follow,
                        who,
                    )
                    .await
                }
                None => Ok(HashMap::new()),
            }
        };
        let started = std::time::Instant::now();
        let draining_listed = draining_nodes.len();
        let listing = async {
            let listed = self
                .list_pods(draining_nodes, "draining", drain_lists)
                .await;
            (listed, started.elapsed())
        };
        let (early, (drained, listing)) = tokio::join!(early, listing);
        let early = early?;
        let mut drained = drained?;
        let mut draining = take_written(&early, &mut node_snaps, own_writes) > 0;
        let mut acted: HashMap<String, Option<FleetNode>> = early;
        drained.extend(standing);
        // A drain whose pods use their whole grace period is looked at again when the
        // first of them should be gone, not up to a drain poll later.
        let listed = Timestamp::now();
        let pods_due = drydock_core::snapshot::first_gone(drained.iter().map(|p| &**p), listed)
            .map(|ahead| Instant::now() + ahead + POD_GONE_MARGIN);
        let overdue =
            drydock_core::snapshot::overdue(drained.iter().map(|p| &**p), listed, OVERDUE_WINDOW);
        pod_snaps.extend(drained);
        let now = Timestamp::now();
        let (mut snapshot, mut plan) = self
            .plan_listing(
                &policy,
                now,
                &node_snaps,
                &mut pod_snaps,
                &pdb_snaps,
                &mut unlisted,
                pod_cache,
            )
            .await?;

        // A node leaving its disruption (Done, Held, Failed) frees a slot of its pool.
        // Those actions go first, a batch of them at a time. After each batch the plan is
        // made again at once, with those nodes as their writes left them (the API
        // server's replies: the cache has not seen the writes yet), and the disruptions
        // the freed slots allow start before the next batch: on a fleet whose nodes
        // finish together, the first freed slot is taken after one batch's writes rather
        // than after all of them, the watch event, the debounce and the next pass. The
        // next batch is taken from the same plan (a node's leaving does not depend on the
        // starts), and the plan after it counts the started disruptions the same way
        // (their writes' replies), so no plan gives a slot away twice: one plan per
        // batch. When a start's write fails the loop ends (whether it took effect is not
        // known until the cache says). The rest of the actions are the last plan's.
        // A disrupted node's next step that neither frees nor takes a slot nor evicts
        // (grant its reboot, record it rebooting, verify its boot) depends on that node
        // alone, so it is written beside the batches below rather than after them: a
        // drained node's grant does not wait for a wave of nodes leaving and starting.
        let steps: Vec<(PlannedAction, Arc<ReadNode>)> = plan
            .actions
            .iter()
            .filter(|a| !acted.contains_key(&a.node) && is_step(a, &snapshot))
            .filter_map(|a| {
                let read = snapshot.node_index(&a.node).map(|i| &snapshot.nodes()[i])?;
                Some((a.clone(), Arc::clone(read)))
            })
            .collect();
        let list_ahead = std::mem::take(&mut plan.list_ahead);
        let stepping = self.act_on_read(
            steps.iter().map(|(a, read)| (a, read)).collect(),
            &policy,
            now,
            pods,
            follow,
            who,
        );
        acted.extend(steps.iter().map(|(a, _)| (a.node.clone(), None)));
        let batches = async {
            let mut drained_any = false;
            // Whether `node_snaps` hold writes that `plan` was not made on.
            let mut stale = false;
            loop {
                let freeing: Vec<&PlannedAction> = plan
                    .actions
                    .iter()
                    .filter(|a| !acted.contains_key(&a.node) && frees(a, &snapshot))
                    .take(FREEING_AT_ONCE)
                    .collect();
                if freeing.is_empty() {
                    break;
                }
                let batch_started = std::time::Instant::now();
                let freed = freeing.len();
                let done = self
                    .act_on(freeing, &snapshot, &policy, now, pods, follow, who)
                    .await?;
                let freeing_ms = batch_started.elapsed().as_millis() as u64;
                stale |= take_written(&done, &mut node_snaps, own_writes) > 0;
                acted.extend(done);
                if !stale {
                    continue;
                }
                (snapshot, plan) = self
                    .plan_listing(
                        &policy,
                        now,
                        &node_snaps,
                        &mut pod_snaps,
                        &pdb_snaps,
                        &mut unlisted,
                        pod_cache,
                    )
                    .await?;
                stale = false;
                let planning_ms = batch_started.elapsed().as_millis() as u64 - freeing_ms;
                let starting: Vec<&PlannedAction> = plan
                    .actions
                    .iter()
                    .filter(|a| !acted.contains_key(&a.node) && starts(a, &snapshot))
                    .collect();
                if starting.is_empty() {
                    debug!(freed, freeing_ms, planning_ms, "batch");
                    continue;
                }
                drained_any |= starting.iter().any(|a| drains(a));
                let tried = starting.len();
                let started = self
                    .act_on(starting, &snapshot, &policy, now, pods, follow, who)
                    .await?;
                debug!(
                    freed,
                    freeing_ms,
                    planning_ms,
                    started = tried,
                    took_ms = batch_started.elapsed().as_millis() as u64,
                    "batch"
                );
                let written = take_written(&started, &mut node_snaps, own_writes);
                acted.extend(started);
                if written < tried {
                    break;
                }
                stale = true;
            }
            Ok::<_, ActError>(drained_any)
        };
        let (stepped, batched) = tokio::join!(stepping, batches);
        let stepped = stepped?;
        draining |= batched?;
        take_written(&stepped, &mut node_snaps, own_writes);
        acted.extend(stepped);

        // A drain under way whose wording only follows its pods shows the new wording
        // once it has held (settle.rs), as a waiting node does: its evictions go out
        // now, its node patch waits.
        let mut settle_wake: Option<Instant> = None;
        let mut held: Vec<PlannedAction> = Vec::new();
        let mut rest: Vec<&PlannedAction> = Vec::new();
        for a in plan.actions.iter().filter(|a| !acted.contains_key(&a.node)) {
            let state = snapshot
                .node_index(&a.node)
                .map(|i| snapshot.nodes()[i].state());
            if let Some(old) = state.and_then(|state| held_wording(a, state, now))
                && settling.holds(&a.node, &a.reason, &mut settle_wake)
            {
                let mut kept = a.clone();
                kept.reason.message = old;
                held.push(kept);
            } else {
                rest.push(a);
            }
        }
        rest.extend(held.iter());
        draining |= rest.iter().any(|a| drains(a));
        let done = self
            .act_on(rest, &snapshot, &policy, now, pods, follow, who)
            .await?;
        take_written(&done, &mut node_snaps, own_writes);

        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for a in &plan.actions {
            *counts
                .entry((a.pool.clone(), a.action.next_phase().as_str().to_string()))
                .or_default() += 1;
        }
        for w in &plan.waiting {
            *counts
                .entry((w.pool.clone(), w.phase.as_str().to_string()))
                .or_default() += 1;
            if w.phase == Phase::Draining {
                draining = true;
            }
        }
        self.metrics.set_nodes(counts);

        let mut writes: Vec<WaitingWrite> = Vec::new();
        let mut refusals: Vec<(Arc<ReadNode>, String)> = Vec::new();
        for w in &plan.waiting {
            let Some(snap) = snapshot.node_index(&w.node).map(|i| &snapshot.nodes()[i]) else {
                continue;
            };
            let node = snap;
            let state = snap.state();
            let mut next = transition::while_waiting(state, w, now);
            let mut channel_set = None;
            let mut command = false;
            // The pool's channel and version pin, carried to the node (only while no
            // action is under way, so this write never races an action's).
            if let Some(pin) = channel::pin_change(&policy, snap) {
                let n = next.get_or_insert_with(|| state.operator.clone());
                n.version_pin = pin;
                command = true;
            }
            match channel::decide(&policy, snap) {
                ChannelDecision::Keep => {}
                ChannelDecision::Set(ch) => {
                    let n = next.get_or_insert_with(|| state.operator.clone());
                    n.desired_channel = Some(ch.clone());
                    channel_set = Some(ch);
                    command = true;
                }
                ChannelDecision::Refused { to, message, .. } => {
                    if refused.insert((w.node.clone(), to)) {
                        warn!(node = %w.node, reason = %message, "channel change refused");
                        self.metrics.channel("refused");
                        refusals.push((Arc::clone(node), message));
                    }
                }
            }
            if let Some(next) = next {
                // A node that stays in its phase shows a new reason that only follows
                // the fleet once it has held (settle.rs); commands to the agent and any
                // other news go at once.
                if !command
                    && state.operator.phase() == w.phase
                    && state
                        .operator
                        .reason_code
                        .as_deref()
                        .is_some_and(|old| w.reason.code.is_fleet_flicker(old))
                    && settling.holds(&w.node, &w.reason, &mut settle_wake)
                {
                    continue;
                }
                if next.reason_code != state.operator.reason_code {
                    debug!(node = %w.node, code = %w.reason.code, reason = %w.reason.message, "waiting");
                }
                // Commands to the agent and progress of a node under way first, then a
                // node's first word on why it waits, then a changed wording.
                let rank = if command || !matches!(w.phase, Phase::Idle | Phase::Queued) {
                    0
                } else if state.operator.phase() != w.phase
                    || next.reason_code != state.operator.reason_code
                {
                    1
                } else {
                    2
                };
                writes.push(WaitingWrite {
                    node: Arc::clone(node),
                    next,
                    channel_set,
                    rank,
                    code: w.reason.code,
                });
            }
        }
        settling.end_pass();
        // What a waiting node shows is told a bounded number of nodes per pass, so that a
        // fleet that staged at once does not hold up the next action behind thousands of
        // writes; the rest follow in the passes right after.
        writes.sort_by_key(|w| w.rank);
        let deferred = writes.len().saturating_sub(WAITING_WRITES_PER_PASS);
        writes.truncate(WAITING_WRITES_PER_PASS);
        if deferred > 0 {
            debug!(deferred, "waiting reasons left for the next pass");
        }
        for (node, message) in refusals {
            self.event(&node, Severity::Warning, "ChannelChangeRefused", message)
                .await;
        }
        let mut jobs = Vec::with_capacity(writes.len());
        for w in writes {
            jobs.push(async move {
                let r = self.tell_waiting(&w, who).await;
                (w, r)
            });
        }
        let mut telling = futures_util::stream::iter(jobs).buffer_unordered(NODES_AT_ONCE);
        while let Some((w, result)) = telling.next().await {
            match result {
                Ok(written) => own_writes.record(&written),
                Err(ActError::NotLeading) => return Err(ActError::NotLeading),
                Err(ActError::Claimed) => {
                    debug!(node = %w.node.name, "claimed by the other writer")
                }
                Err(e) => {
                    warn!(node = %w.node.name, error = %e, "cannot record why the node waits")
                }
            }
        }
        drop(telling);
        let mut wake = plan.next_wakeup.map(|t| {
            let secs = t.duration_since(Timestamp::now()).as_secs_f64().max(0.0);
            Instant::now() + Duration::from_secs_f64(secs.min(86_400.0)) + Duration::from_millis(50)
        });
        if let Some(t) = settle_wake {
            wake = Some(wake.map_or(t, |w| w.min(t)));
        }
        if deferred > 0 || !plan.list_pods.is_empty() {
            let soon = Instant::now() + Duration::from_millis(200);
            wake = Some(wake.map_or(soon, |t| t.min(soon)));
        }
        debug!(
            draining = draining_listed,
            listing_ms = listing.as_millis() as u64,
            took_ms = started.elapsed().as_millis() as u64,
            actions = plan.actions.len(),
            ahead = list_ahead.len(),
            "pass"
        );
        Ok(PassEnd {
            wake,
            draining,
            pods_due,
            overdue,
            list_ahead,
        })
    }

    /// Records why `w.node` waits (and the channel it is given, with its Event); returns
    /// the node as written.
    async fn tell_waiting(&self, w: &WaitingWrite, who: Writer) -> Result<FleetNode, ActError> {
        let name = w.node.name.as_str();
        let cause = format!("waiting {} {}", w.next.phase(), w.code);
        let written = self.write(name, &w.next, &cause, who).await?;
        if let Some(ch) = &w.channel_set {
            info!(node = %name, channel = %ch, "set the node's channel");
            self.metrics.channel("set");
            self.event(
                &w.node,
                Severity::Normal,
                "ChannelSet",
                format!("the pool's channel is {ch}; the agent switches the node to it"),
            )
            .await;
        }
        Ok(written)
    }

    /// Plans; lists the pods the plan asks for and plans again, a few rounds at most (a
    /// round asks for no more nodes than its pools have free slots). Whatever is still
    /// asked for after the last round is listed by the next pass, which follows at once.
    #[allow(clippy::too_many_arguments)]
    async fn plan_listing(
        &self,
        policy: &Policy,
        now: Timestamp,
        nodes: &[Arc<ReadNode>],
        pods: &mut Vec<Arc<PodSnapshot>>,
        pdbs: &[drydock_core::snapshot::PdbSnapshot],
        unlisted: &mut HashSet<&str>,
        pod_cache: &mut PodCache,
    ) -> Result<(Snapshot, planner::Plan), ActError> {
        let mut rounds = 0;
        loop {
            let started = std::time::Instant::now();
            let snapshot = Snapshot::from_read(nodes.to_vec(), pods.clone(), pdbs.to_vec())
                .with_pods_unlisted(unlisted.iter().copied());
            let plan = planner::plan(&snapshot, policy, now);
            self.metrics.planned(started.elapsed());
            if plan.list_pods.is_empty() || rounds == LIST_ROUNDS {
                return Ok((snapshot, plan));
            }
            rounds += 1;
            for name in &plan.list_pods {
                unlisted.remove(name.as_str());
            }
            debug!(
                nodes = plan.list_pods.len(),
                round = rounds,
                "listing candidates' pods"
            );
            pods.extend(
                self.list_pods(plan.list_pods.clone(), "candidate", pod_cache)
                    .await?,
            );
        }
    }

    /// Starts the disruptions the slots free now allow while a pass lists its draining
    /// nodes' pods: a slot a step freed is then taken within one plan's time rather than
    /// after a round of lists (up to one a draining node). The plan is made on `known`,
    /// each draining node's last list however old ([`last_lists`]), which can only be
    /// behind the node by pods that have gone or begun terminating since: it counts the
    /// budgets' pending evictions high, never low, so it starts no drain a fresh plan
    /// would not. Only starts are taken from it (a grant or an eviction waits for the
    /// fresh lists). Returns the nodes started, as [`Self::act_on`] does.
    #[allow(clippy::too_many_arguments)]
    async fn start_first(
        &self,
        policy: &Policy,
        now: Timestamp,
        nodes: &[Arc<ReadNode>],
        known: Vec<Arc<PodSnapshot>>,
        pdbs: &[drydock_core::snapshot::PdbSnapshot],
        unlisted: &HashSet<&str>,
        pods: &PodHolds,
        follow: &FollowUps,
        who: Writer,
    ) -> Result<HashMap<String, Option<FleetNode>>, ActError> {
        let started = std::time::Instant::now();
        let snapshot = Snapshot::from_read(nodes.to_vec(), known, pdbs.to_vec())
            .with_pods_unlisted(unlisted.iter().copied());
        let plan = planner::plan(&snapshot, policy, now);
        self.metrics.planned(started.elapsed());
        let starting: Vec<&PlannedAction> = plan
            .actions
            .iter()
            .filter(|a| starts(a, &snapshot))
            .collect();
        if starting.is_empty() {
            return Ok(HashMap::new());
        }
        debug!(nodes = starting.len(), "starting beside the draining lists");
        self.act_on(starting, &snapshot, policy, now, pods, follow, who)
            .await
    }

    /// Acts on `actions` (nodes as read in `snapshot`). Each node's writes are
    /// independent of every other node's, so several nodes are acted on at once (each
    /// node's own steps stay in order) and one slow write does not hold up the rest.
    /// Returns every node acted on, with the Node as its write left it (None when the
    /// action wrote nothing or failed); what each action leaves to do goes to `follow`.
    #[allow(clippy::too_many_arguments)]
    async fn act_on(
        &self,
        actions: Vec<&PlannedAction>,
        snapshot: &Snapshot,
        policy: &Policy,
        now: Timestamp,
        pods: &PodHolds,
        follow: &FollowUps,
        who: Writer,
    ) -> Result<HashMap<String, Option<FleetNode>>, ActError> {
        let pairs = actions
            .into_iter()
            .filter_map(|a| {
                let read = snapshot.node_index(&a.node).map(|i| &snapshot.nodes()[i])?;
                Some((a, read))
            })
            .collect();
        self.act_on_read(pairs, policy, now, pods, follow, who)
            .await
    }

    /// [`Self::act_on`] for actions paired with their nodes as read.
    async fn act_on_read(
        &self,
        actions: Vec<(&PlannedAction, &Arc<ReadNode>)>,
        policy: &Policy,
        now: Timestamp,
        pods: &PodHolds,
        follow: &FollowUps,
        who: Writer,
    ) -> Result<HashMap<String, Option<FleetNode>>, ActError> {
        let mut jobs = Vec::with_capacity(actions.len());
        for (a, read) in actions {
            let grace = policy.all_pools().find(|p| p.name == a.pool).and_then(|p| {
                match p.drain.grace_period {
                    GracePeriod::Pod => None,
                    GracePeriod::Seconds(s) => Some(s),
                }
            });
            jobs.push(async move {
                (
                    a,
                    self.act(read, read.state(), a, now, grace, pods, who).await,
                )
            });
        }
        let mut acting = futures_util::stream::iter(jobs).buffer_unordered(NODES_AT_ONCE);
        let mut acted = HashMap::new();
        while let Some((a, result)) = acting.next().await {
            match result {
                Ok((follow_up, written)) => {
                    if let Some(f) = follow_up {
                        // Held from now on, so that no later plan evicts them again
                        // while this is queued or under way.
                        for pod in f.evict.iter().chain(&f.delete) {
                            pods.hold(&pod.uid);
                        }
                        // The receiver lives as long as the passes.
                        let _ = follow.send(f);
                    }
                    acted.insert(a.node.clone(), written);
                }
                Err(ActError::NotLeading) => return Err(ActError::NotLeading),
                Err(ActError::Claimed) => {
                    debug!(node = %a.node, action = a.action.name(), "claimed by the other writer; left to whoever reads the node next");
                    acted.insert(a.node.clone(), None);
                }
                Err(e) => {
                    warn!(node = %a.node, action = a.action.name(), error = %e, "action failed; the next pass retries it");
                    acted.insert(a.node.clone(), None);
                }
            }
        }
        Ok(acted)
    }

    /// Writes the node's next operator state for `a`; returns what is left to do (its
    /// Events, evictions, deletions) and the Node as written.
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        node: &Arc<ReadNode>,
        state: &NodeState,
        a: &PlannedAction,
        now: Timestamp,
        grace: Option<u64>,
        pods: &PodHolds,
        who: Writer,
    ) -> Result<(Option<FollowUp>, Option<FleetNode>), ActError> {
        let next = transition::after_action(state, a, now);
        let mut written = None;
        if next != state.operator {
            written = Some(self.write(&a.node, &next, a.action.name(), who).await?);
        }
        // Events and counters once per step: a new phase, or a new reason within one
        // (a forced drain stays Draining).
        let first_time = state.operator.phase() != a.action.next_phase()
            || state.operator.reason_code.as_deref() != Some(a.reason.code.as_str())
            || matches!(a.action, Action::Drain { start: true, .. });
        let mut follow_up = FollowUp {
            node: Arc::clone(node),
            pool: a.pool.clone(),
            events: Vec::new(),
            evict: Vec::new(),
            delete: Vec::new(),
            grace,
        };
        if first_time {
            info!(node = %a.node, pool = %a.pool, action = a.action.name(), reason = %a.reason.message, "act");
            self.metrics.action(a.action.name());
            follow_up.events = transition::events_for(state, a);
        }
        match &a.action {
            Action::Drain { evict, .. } => follow_up.evict = pods.free(evict, Instant::now()),
            Action::ForceDrain { delete } => follow_up.delete = pods.free(delete, Instant::now()),
            Action::GrantReboot { .. } => {
                self.metrics.reboot_granted(&a.pool);
                if let Some(started) = state.operator.drain_started {
                    let secs = now.duration_since(started).as_secs_f64().max(0.0);
                    self.metrics
                        .drain_finished(&a.pool, Duration::from_secs_f64(secs));
                }
            }
            _ => {}
        }
        let empty = follow_up.events.is_empty()
            && follow_up.evict.is_empty()
            && follow_up.delete.is_empty();
        Ok(((!empty).then_some(follow_up), written))
    }

    /// Asks the Eviction API for `pod`; returns when to ask again if it was refused.
    async fn evict(
        &self,
        node: &NodeSnapshot,
        pool: &str,
        pod: &PodRef,
        grace: Option<u64>,
    ) -> Option<(String, Instant)> {
        match drain::evict(&self.client, pod, grace).await {
            Ok(Evicted::Accepted) => {
                debug!(node = %node.name, pod = %pod.name, "evicted");
                self.metrics.eviction(pool, "accepted");
                None
            }
            Ok(Evicted::Gone) => {
                debug!(node = %node.name, pod = %pod.name, "evicted: already gone");
                self.metrics.eviction(pool, "gone");
                None
            }
            Ok(Evicted::Blocked {
                retry_after,
                message,
            }) => {
                self.metrics.eviction(pool, "blocked");
                let budget = pod.pdb.as_deref().unwrap_or("(unknown budget)");
                self.event(
                    node,
                    Severity::Warning,
                    "EvictionBlocked",
                    format!(
                        "evicting {}/{} is blocked by PodDisruptionBudget {budget}: {message}; retrying in {}s",
                        pod.namespace,
                        pod.name,
                        retry_after.as_secs()
                    ),
                )
                .await;
                Some((pod.uid.clone(), Instant::now() + retry_after))
            }
            Ok(Evicted::Refused { status, message }) => {
                self.metrics.eviction(pool, "refused");
                warn!(pod = %pod.name, status, %message, "eviction refused");
                Some((pod.uid.clone(), Instant::now() + Duration::from_secs(10)))
            }
            Err(e) => {
                self.metrics.eviction(pool, "error");
                warn!(error = %e, "eviction failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_on_node(name: &str, deleted_by: Option<Timestamp>) -> Arc<PodSnapshot> {
        Arc::new(PodSnapshot {
            namespace: "ns".into(),
            name: name.into(),
            uid: name.into(),
            node: Some("n".into()),
            labels: Default::default(),
            owner: drydock_core::snapshot::PodOwner::Unmanaged,
            phase: drydock_core::snapshot::PodPhase::Running,
            ready: true,
            deleted_by,
            has_empty_dir: false,
        })
    }

    #[test]
    fn a_drain_keeps_its_wording_only_when_the_sentence_alone_would_change() {
        let now = Timestamp::now();
        let mut state = NodeState::default();
        state.operator.phase = Some(Phase::Draining);
        state.operator.since = Some(now);
        state.operator.cordoned = true;
        state.operator.drain_started = Some(now);
        state.operator.pool = Some("p".into());
        state.operator.reason_code = Some("DrainInProgress".into());
        state.operator.reason = Some("5 pod(s) left to evict: a, b, c, d, e".into());
        let drain = |start: bool, code: planner::ReasonCode, message: &str| PlannedAction {
            node: "n".into(),
            pool: "p".into(),
            action: Action::Drain {
                start,
                evict: Vec::new(),
            },
            reason: planner::Reason {
                code,
                message: message.into(),
            },
        };
        use planner::ReasonCode::{DrainInProgress, Scheduled};
        let fewer = drain(false, DrainInProgress, "4 pod(s) left to evict: b, c, d, e");
        assert_eq!(
            held_wording(&fewer, &state, now).as_deref(),
            Some("5 pod(s) left to evict: a, b, c, d, e"),
            "the same code, a new sentence: kept while it settles"
        );
        let same = drain(
            false,
            DrainInProgress,
            "5 pod(s) left to evict: a, b, c, d, e",
        );
        assert_eq!(held_wording(&same, &state, now), None, "nothing to write");
        assert_eq!(
            held_wording(&drain(true, Scheduled, "drain"), &state, now),
            None,
            "a start is written at once"
        );
        // Anything on the node but the sentence changing: written at once.
        type Change = fn(&mut NodeState);
        let changes: [(&str, Change); 2] = [
            ("a new code", |s| {
                s.operator.reason_code = Some("Scheduled".into())
            }),
            ("another pool", |s| s.operator.pool = Some("q".into())),
        ];
        for (what, change) in changes {
            let mut changed = state.clone();
            change(&mut changed);
            assert_eq!(held_wording(&fewer, &changed, now), None, "{what}");
        }
        let grant = PlannedAction {
            action: Action::GrantReboot {
                token: 1,
                target: "1.0.0".into(),
            },
            ..fewer.clone()
        };
        assert_eq!(held_wording(&grant, &state, now), None, "not a drain");
    }

    #[test]
    fn the_early_plan_takes_every_last_list_or_none_when_a_draining_node_has_none() {
        let held = vec![pod_on_node("waiting", None)];
        let standing = vec![pod_on_node("standing", None)];
        let mut lists = PodCache::new();
        lists.insert(
            "old".into(),
            (
                Instant::now() - Duration::from_secs(60),
                vec![pod_on_node("stale", None)],
            ),
        );
        let known = last_lists(&held, &standing, &["old".into()], &lists).expect("all listed");
        let names: Vec<&str> = known.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["waiting", "standing", "stale"], "however old");
        assert!(
            last_lists(&held, &standing, &["old".into(), "new".into()], &lists).is_none(),
            "a draining node never listed: its pending evictions are unknown"
        );
    }

    #[test]
    fn a_draining_list_stands_long_only_while_everything_on_it_is_already_going() {
        let now = Timestamp::now();
        let later = now + jiff::SignedDuration::from_secs(5);
        let ms = Duration::from_millis;
        let running = pod_on_node("a", None);
        let going = pod_on_node("b", Some(later));
        let due = pod_on_node("c", Some(now));
        let stands = |pods: &[Arc<PodSnapshot>], age_ms: u64, at: Timestamp| {
            drain_list_stands(pods, ms(age_ms), at)
        };
        // A pod still to evict: the list stands for a moment only.
        assert!(stands(std::slice::from_ref(&running), 100, now));
        assert!(!stands(std::slice::from_ref(&running), 600, now));
        assert!(!stands(&[running.clone(), going.clone()], 600, now));
        // Everything on it terminating and none due: it stands until one is due, bounded.
        assert!(stands(std::slice::from_ref(&going), 600, now));
        assert!(stands(std::slice::from_ref(&going), 9_000, now));
        assert!(!stands(std::slice::from_ref(&going), 10_000, now));
        // A pod due to be gone: never, however young the list.
        assert!(!stands(&[going.clone(), due], 10, now));
        assert!(!stands(&[going], 600, later));
        // An empty list (the drain is done) stands only for the moment.
        assert!(stands(&[], 100, now));
        assert!(!stands(&[], 600, now));
    }

    #[test]
    fn a_pod_is_held_while_its_eviction_is_queued_and_a_little_after() {
        let pods = PodHolds::default();
        let t = Instant::now();
        assert!(!pods.held("a", t));
        pods.hold("a");
        assert!(pods.held("a", t), "queued or under way");
        assert!(
            pods.held("a", t + Duration::from_secs(3600)),
            "however long it takes"
        );
        pods.done("a", t);
        assert!(
            pods.held("a", t + EVICTED_HOLD / 2),
            "a list made before it ran"
        );
        assert!(
            !pods.held("a", t + EVICTED_HOLD),
            "the next lists show it terminating"
        );
        // Done is no retry: it wakes no pass.
        assert_eq!(pods.next_retry(t), None);
    }

    #[test]
    fn a_refused_eviction_is_held_until_its_retry_which_wakes_a_pass() {
        let pods = PodHolds::default();
        let t = Instant::now();
        pods.hold("a");
        pods.hold("b");
        pods.retry_at("a".into(), t + Duration::from_secs(5));
        pods.retry_at("b".into(), t + Duration::from_secs(2));
        assert!(pods.held("a", t + Duration::from_secs(4)));
        assert!(!pods.held("a", t + Duration::from_secs(5)));
        assert_eq!(pods.next_retry(t), Some(t + Duration::from_secs(2)));
        // What is past is forgotten: the next retry is the later one, then none.
        assert_eq!(
            pods.next_retry(t + Duration::from_secs(3)),
            Some(t + Duration::from_secs(5))
        );
        assert_eq!(pods.next_retry(t + Duration::from_secs(6)), None);
        assert!(!pods.held("a", t + Duration::from_secs(6)));
    }

    #[test]
    fn a_plan_hands_out_only_the_pods_no_one_holds() {
        let pod = |uid: &str| PodRef {
            namespace: "shop".into(),
            name: format!("web-{uid}"),
            uid: uid.into(),
            pdb: Some("shop/web".into()),
        };
        let pods = PodHolds::default();
        let t = Instant::now();
        pods.hold("b");
        pods.retry_at("c".into(), t + Duration::from_secs(5));
        let free = pods.free(&[pod("a"), pod("b"), pod("c")], t);
        assert_eq!(free, vec![pod("a")]);
        let later = pods.free(&[pod("a"), pod("b"), pod("c")], t + Duration::from_secs(5));
        assert_eq!(later, vec![pod("a"), pod("c")], "b is still under way");
    }

    #[test]
    fn a_released_pod_is_free_at_once() {
        let pods = PodHolds::default();
        let t = Instant::now();
        pods.hold("a");
        pods.release("a");
        assert!(!pods.held("a", t));
    }

    #[tokio::test]
    async fn evictions_under_one_budget_take_turns_and_others_do_not_wait() {
        let locks = Locks::default();
        assert!(
            locks.budget(None).is_none(),
            "a pod without a budget waits for none"
        );
        let web = locks.budget(Some("shop/web")).expect("a lock");
        let again = locks.budget(Some("shop/web")).expect("a lock");
        assert!(Arc::ptr_eq(&web, &again), "one lock per budget");
        let db = locks.budget(Some("shop/db")).expect("a lock");
        let held = web.lock().await;
        assert!(again.try_lock().is_err(), "the same budget waits its turn");
        assert!(db.try_lock().is_ok(), "another budget does not");
        drop(held);
        assert!(again.try_lock().is_ok());
        assert!(Arc::ptr_eq(&locks.node("n1"), &locks.node("n1")));
        assert!(!Arc::ptr_eq(&locks.node("n1"), &locks.node("n2")));
    }

    #[tokio::test]
    async fn evictions_waiting_for_a_budget_hold_no_slot_from_another_budget() {
        let locks = Locks::default();
        let slots = Slots::default();
        let web = locks.budget(Some("shop/web")).expect("a lock");
        let held = web.lock().await;
        // Many more evictions under one budget than there are slots, all waiting.
        let mut waiting = futures_util::stream::FuturesUnordered::new();
        for i in 0..(EVICTIONS_AT_ONCE * 3) {
            waiting.push(in_turn(
                &locks,
                &slots,
                Some("shop/web"),
                move || async move { i },
            ));
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.next())
                .await
                .is_err(),
            "none goes before the budget's turn"
        );
        let other = in_turn(&locks, &slots, Some("shop/db"), || async { "db" });
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), other)
                .await
                .ok(),
            Some("db"),
            "another budget's eviction is not held up by the waiting ones"
        );
        let none = in_turn(&locks, &slots, None, || async { "no budget" });
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), none)
                .await
                .ok(),
            Some("no budget")
        );
        drop(held);
        let mut done = Vec::new();
        while let Some(i) = waiting.next().await {
            done.push(i);
        }
        assert_eq!(done.len(), EVICTIONS_AT_ONCE * 3, "all go once it is free");
    }

    #[tokio::test]
    async fn a_request_waiting_its_turn_holds_only_its_waits() {
        let locks = Locks::default();
        let slots = Slots::default();
        // A request whose state is 16 KiB across an await: larger than any eviction
        // with its Event (the heaptrack profile found about 9 KB a follow-up), so
        // that what the queued future holds is its waits alone.
        let ask = || async {
            let state = [7u8; 16 * 1024];
            tokio::task::yield_now().await;
            state.iter().map(|b| usize::from(*b)).sum::<usize>()
        };
        assert!(
            std::mem::size_of_val(&ask()) >= 16 * 1024,
            "the request is large"
        );
        let web = locks.budget(Some("shop/web")).expect("a lock");
        let held = web.lock().await;
        let mut queued = Box::pin(in_turn(&locks, &slots, Some("shop/web"), ask));
        let size = std::mem::size_of_val(&*queued);
        assert!(size < 1024, "a queued request holds {size} bytes");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut queued)
                .await
                .is_err(),
            "it waits for its budget's turn"
        );
        drop(held);
        assert_eq!(queued.await, 7 * 16 * 1024, "and runs once it has its turn");
    }

    #[test]
    fn locks_no_one_holds_are_dropped_once_there_are_many() {
        let locks = Locks::default();
        let kept = locks.node("kept");
        for i in 0..1100 {
            drop(locks.node(&format!("n{i}")));
        }
        let n = locks.nodes.lock().map(|m| m.len()).unwrap_or_default();
        assert!(n < 1100, "{n} locks kept");
        assert!(Arc::ptr_eq(&kept, &locks.node("kept")), "a held lock stays");
    }
}
