//! The real agent against the real control plane (a kwok node) and a simulated Flatcar
//! host on a private dbus-daemon: status appears on the Node, a grant leads to exactly one
//! reboot, and restarts at any step are safe.

use std::collections::BTreeMap;
use std::time::Duration;

use drydock_core::protocol::keys;
use drydock_host::facts::Host;
use drydock_host::update_engine::{Client, Event, Operation};
use drydock_sim::bus::PrivateBus;
use drydock_sim::host::{FcosOptions, SimHost, fcos_ref};
use drydock_sim::rpm_ostree::checksum_of;
use drydock_sim::update_engine::Offer;
use drydock_testenv::TestEnv;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const NODE: &str = "node-0";

struct World {
    env: TestEnv,
    bus: PrivateBus,
    root: tempfile::TempDir,
    sim: SimHost,
}

async fn world() -> World {
    world_on(None).await
}

/// A world whose host runs Flatcar 4081.2.0, or Fedora CoreOS as `fcos` says.
async fn world_on(fcos: Option<FcosOptions>) -> World {
    let mut env = TestEnv::start().await.expect("control plane");
    env.add_ready_nodes("node", 1, &[], Duration::from_secs(60))
        .await
        .expect("node Ready");
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let root = tempfile::tempdir().expect("host root");
    let sim = match fcos {
        None => SimHost::start_flatcar(
            bus.address(),
            root.path(),
            "4081.2.0",
            Duration::from_millis(20),
            Duration::from_millis(300),
        )
        .await
        .expect("simulated host"),
        Some(o) => SimHost::start_fcos(bus.address(), root.path(), o)
            .await
            .expect("simulated FCOS host"),
    };
    World {
        env,
        bus,
        root,
        sim,
    }
}

async fn start_agent(w: &World) -> JoinHandle<()> {
    start_agent_with(w, drydock_agent::DEFAULT_CHECK_INTERVAL, None).await
}

/// An agent checking every `interval`, against a Cincinnati server when one is given.
async fn start_agent_with(
    w: &World,
    interval: Duration,
    cincinnati: Option<String>,
) -> JoinHandle<()> {
    let config = drydock_agent::Config {
        node_name: NODE.into(),
        client: w.env.client(),
        bus: w.bus.connect().await.expect("agent's bus connection"),
        host_root: w.root.path().to_path_buf(),
        agent_version: "test".into(),
        check_interval: interval,
        cincinnati,
    };
    tokio::spawn(async move {
        if let Err(e) = drydock_agent::run(config).await {
            eprintln!("agent stopped: {e}");
        }
    })
}

async fn annotations(w: &World) -> BTreeMap<String, String> {
    let nodes: Api<Node> = Api::all(w.env.client());
    nodes
        .get(NODE)
        .await
        .expect("node")
        .metadata
        .annotations
        .unwrap_or_default()
}

async fn wait_annotation(w: &mut World, key: &'static str, want: Option<String>) {
    let what = format!("{key} = {want:?}");
    wait_annotations(w, &what, move |a| a.get(key) == want.as_ref()).await;
}

/// Waits until the node's annotations satisfy `check`; on a timeout, fails naming `what`
/// and showing the agent's message.
async fn wait_annotations(
    w: &mut World,
    what: &str,
    check: impl Fn(&BTreeMap<String, String>) -> bool + Clone + Send + 'static,
) {
    let nodes: Api<Node> = Api::all(w.env.client());
    let r = w
        .env
        .wait_for(what, Duration::from_secs(20), move || {
            let (nodes, check) = (nodes.clone(), check.clone());
            async move {
                let n = nodes.get(NODE).await?;
                Ok(check(&n.metadata.annotations.unwrap_or_default()))
            }
        })
        .await;
    if let Err(e) = r {
        panic!(
            "{e}; the node's agent message is {:?}",
            annotations(w).await.get(keys::AGENT_MESSAGE)
        );
    }
}

/// Stages 4230.0.0 through the host's update_engine, as a periodic check would.
async fn stage_update(w: &World) {
    w.sim.update_engine().set_offer(Some(Offer {
        version: "4230.0.0".into(),
        size: 1000,
        fail_download: false,
    }));
    let client = Client::new(w.bus.connect().await.expect("connect"));
    let mut events = client.watch().await.expect("watch");
    client.attempt_update().await.expect("AttemptUpdate");
    loop {
        if let Event::Status(s) = timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("in time")
            .expect("event")
            && s.operation == Operation::UpdatedNeedReboot
        {
            break;
        }
    }
}

/// Writes `metadata` (labels, annotations) on the node as the operator does: server-side
/// apply with the operator's field manager.
async fn operator_apply(w: &World, metadata: serde_json::Value) {
    let mut metadata = metadata;
    metadata["name"] = serde_json::json!(NODE);
    let patch = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": metadata});
    let nodes: Api<Node> = Api::all(w.env.client());
    nodes
        .patch(
            NODE,
            &PatchParams::apply("drydock-operator").force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("operator's apply");
}

/// Starts the agent, waits for its first status, stages 4230.0.0 and waits until the
/// Node shows it.
async fn agent_with_staged_update(w: &mut World) -> JoinHandle<()> {
    let agent = start_agent(w).await;
    wait_annotation(w, keys::BOOTED_VERSION, Some("4081.2.0".into())).await;
    stage_update(w).await;
    wait_annotation(w, keys::STAGED_VERSION, Some("4230.0.0".into())).await;
    agent
}

/// Fails if the host boots again within a few seconds.
async fn assert_no_further_boot(
    boots: &mut tokio::sync::watch::Receiver<drydock_sim::host::Boot>,
    why: &str,
) {
    assert!(
        timeout(Duration::from_secs(3), boots.changed())
            .await
            .is_err(),
        "{why}"
    );
}

/// What the operator writes to grant a reboot.
async fn grant(w: &World, token: u64) {
    let a = annotations(w).await;
    operator_apply(
        w,
        serde_json::json!({
            "labels": {keys::PHASE: "RebootGranted"},
            "annotations": {
                keys::PHASE_SINCE: jiff::Timestamp::now().to_string(),
                keys::REBOOT_TOKEN: token.to_string(),
                keys::TARGET_VERSION: "4230.0.0",
                keys::GRANT_SLOT: a[keys::BOOTED_SLOT],
                keys::GRANT_BOOT_ID: a[keys::BOOT_ID],
                keys::CORDONED: "true",
            },
        }),
    )
    .await;
}

/// The node's labels.
async fn labels(w: &World) -> BTreeMap<String, String> {
    let nodes: Api<Node> = Api::all(w.env.client());
    nodes
        .get(NODE)
        .await
        .expect("node")
        .metadata
        .labels
        .unwrap_or_default()
}

#[tokio::test]
async fn status_appears_on_the_node_and_a_grant_leads_to_exactly_one_reboot() {
    let mut w = world().await;
    let host = Host::new(w.root.path());
    let agent = start_agent(&w).await;
    wait_annotation(&mut w, keys::BOOTED_VERSION, Some("4081.2.0".into())).await;
    let a = annotations(&w).await;
    assert_eq!(a[keys::OS], "flatcar");
    assert_eq!(a[keys::BOOTED_SLOT], "a");
    assert_eq!(a[keys::BOOT_ID], host.boot_id().expect("boot id"));
    assert_eq!(a[keys::CHANNEL], "stable");
    assert_eq!(a[keys::UPDATE_STATUS], "idle");
    assert!(!a.contains_key(keys::STAGED_VERSION));

    stage_update(&w).await;
    wait_annotation(&mut w, keys::STAGED_VERSION, Some("4230.0.0".into())).await;
    assert_eq!(
        labels(&w)
            .await
            .get(keys::REBOOT_NEEDED)
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(annotations(&w).await[keys::UPDATE_STATUS], "staged");

    let mut boots = w.sim.reboots();
    grant(&w, 1).await;
    timeout(Duration::from_secs(20), boots.changed())
        .await
        .expect("a reboot")
        .expect("boot");
    assert_eq!(boots.borrow().number, 2);
    assert_eq!(
        annotations(&w).await[keys::REBOOT_ACK],
        "1",
        "acknowledged before rebooting"
    );

    // The agent is a process of the host: it dies with the reboot and starts again.
    agent.abort();
    let _agent = start_agent(&w).await;
    wait_annotation(&mut w, keys::BOOTED_VERSION, Some("4230.0.0".into())).await;
    let a = annotations(&w).await;
    assert_eq!(a[keys::BOOTED_SLOT], "b");
    assert_eq!(a[keys::BOOT_ID], host.boot_id().expect("boot id"));
    assert!(
        !a.contains_key(keys::STAGED_VERSION),
        "the request is cleared"
    );
    assert_eq!(
        labels(&w)
            .await
            .get(keys::REBOOT_NEEDED)
            .map(String::as_str),
        Some("false")
    );
    // The grant is still on the node; it must not reboot the host again.
    assert_no_further_boot(&mut boots, "rebooted twice for one grant").await;
    assert_eq!(w.sim.reboots().borrow().number, 2);
}

#[tokio::test]
async fn no_grant_no_reboot_and_a_stale_grant_is_refused() {
    let mut w = world().await;
    let _agent = agent_with_staged_update(&mut w).await;
    let mut boots = w.sim.reboots();
    // A grant written for another boot (say, forged or left from before a crash).
    operator_apply(
        &w,
        serde_json::json!({"labels": {keys::PHASE: "RebootGranted"}, "annotations": {
            keys::PHASE_SINCE: jiff::Timestamp::now().to_string(),
            keys::REBOOT_TOKEN: "5", keys::TARGET_VERSION: "4230.0.0",
            keys::GRANT_SLOT: "a", keys::GRANT_BOOT_ID: "00000000-0000-4000-a000-000000000000",
        }}),
    )
    .await;
    assert_no_further_boot(&mut boots, "rebooted for a grant of another boot").await;
    assert!(!annotations(&w).await.contains_key(keys::REBOOT_ACK));
}

#[tokio::test]
async fn an_agent_restarted_after_acknowledging_finishes_the_reboot_once() {
    let mut w = world().await;
    let agent = agent_with_staged_update(&mut w).await;
    // logind refuses at first: the agent acknowledges, fails to reboot, and is killed.
    w.sim
        .refuse_reboots(Some("a shutdown is already scheduled"));
    let mut boots = w.sim.reboots();
    grant(&w, 1).await;
    wait_annotation(&mut w, keys::REBOOT_ACK, Some("1".into())).await;
    agent.abort();
    assert_eq!(
        w.sim.reboots().borrow().number,
        1,
        "no reboot while logind refuses"
    );
    // A new agent in the same boot finishes the job, exactly once.
    w.sim.refuse_reboots(None);
    let agent = start_agent(&w).await;
    timeout(Duration::from_secs(20), boots.changed())
        .await
        .expect("the reboot")
        .expect("boot");
    agent.abort();
    let _agent = start_agent(&w).await;
    wait_annotation(&mut w, keys::BOOTED_VERSION, Some("4230.0.0".into())).await;
    assert_no_further_boot(&mut boots, "rebooted twice").await;
    assert_eq!(w.sim.reboots().borrow().number, 2);
}

#[tokio::test]
async fn the_operators_channel_reaches_update_conf() {
    let mut w = world().await;
    let _agent = start_agent(&w).await;
    wait_annotation(&mut w, keys::CHANNEL, Some("stable".into())).await;
    operator_apply(
        &w,
        serde_json::json!({"annotations": {keys::DESIRED_CHANNEL: "beta"}}),
    )
    .await;
    wait_annotation(&mut w, keys::CHANNEL, Some("beta".into())).await;
    let conf = std::fs::read_to_string(w.root.path().join("etc/flatcar/update.conf"))
        .expect("update.conf written");
    assert_eq!(conf, "GROUP=beta\n");
    assert_eq!(
        Host::new(w.root.path())
            .update_conf()
            .expect("conf")
            .server
            .as_deref(),
        Some("https://public.update.flatcar-linux.net/v1/update/")
    );
}

#[tokio::test]
async fn the_agent_keeps_running_while_update_engine_is_away() {
    let mut w = world().await;
    w.sim.stop_update_engine();
    let _agent = start_agent(&w).await;
    wait_annotation(&mut w, keys::UPDATE_STATUS, Some("unavailable".into())).await;
    assert_eq!(
        annotations(&w).await[keys::BOOTED_VERSION],
        "4081.2.0",
        "host facts are still reported"
    );
    w.sim
        .start_update_engine()
        .await
        .expect("update_engine back");
    wait_annotation(&mut w, keys::UPDATE_STATUS, Some("idle".into())).await;
}

#[tokio::test]
async fn a_restarted_update_engine_reporting_0_0_0_does_not_lose_the_staged_version() {
    let mut w = world().await;
    let _agent = agent_with_staged_update(&mut w).await;
    w.sim.stop_update_engine();
    wait_annotation(&mut w, keys::UPDATE_STATUS, Some("unavailable".into())).await;
    assert_eq!(
        annotations(&w).await[keys::STAGED_VERSION],
        "4230.0.0",
        "still staged while the service is away"
    );
    w.sim
        .start_update_engine()
        .await
        .expect("update_engine back, reporting 0.0.0");
    wait_annotation(&mut w, keys::UPDATE_STATUS, Some("staged".into())).await;
    assert_eq!(annotations(&w).await[keys::STAGED_VERSION], "4230.0.0");
}

const FCOS_BOOTED: &str = "41.20241109.3.0";
const FCOS_NEXT: &str = "41.20241122.3.0";

/// A Fedora CoreOS host on 41.20241109.3.0 whose stable stream offers 41.20241122.3.0.
async fn fcos_world() -> World {
    let mut o = FcosOptions::new(FCOS_BOOTED);
    o.step = Duration::from_millis(10);
    let w = world_on(Some(o)).await;
    w.sim
        .ostree()
        .expect("rpm-ostree")
        .publish(&fcos_ref("stable"), FCOS_NEXT);
    w
}

#[tokio::test]
async fn on_fcos_the_agent_stages_locked_and_a_grant_finalizes_exactly_once() {
    let mut w = fcos_world().await;
    let agent = start_agent(&w).await;
    wait_annotation(&mut w, keys::STAGED_VERSION, Some(FCOS_NEXT.into())).await;
    let a = annotations(&w).await;
    assert_eq!(a[keys::OS], "fcos");
    assert_eq!(a[keys::BOOTED_VERSION], FCOS_BOOTED);
    assert_eq!(a[keys::BOOTED_SLOT], checksum_of(FCOS_BOOTED));
    assert_eq!(a[keys::CHANNEL], "stable");
    assert_eq!(a[keys::UPDATE_STATUS], "staged");
    let ostree = w.sim.ostree().expect("rpm-ostree");
    assert!(
        ostree.staged().is_some_and(|s| s.finalization_locked),
        "staged with lock-finalization"
    );
    assert_eq!(ostree.clients().len(), 1, "the agent registered");

    let mut boots = w.sim.reboots();
    boots.borrow_and_update();
    operator_apply(
        &w,
        serde_json::json!({
            "labels": {keys::PHASE: "RebootGranted"},
            "annotations": {
                keys::PHASE_SINCE: jiff::Timestamp::now().to_string(),
                keys::REBOOT_TOKEN: "1",
                keys::TARGET_VERSION: FCOS_NEXT,
                keys::GRANT_SLOT: a[keys::BOOTED_SLOT],
                keys::GRANT_BOOT_ID: a[keys::BOOT_ID],
                keys::CORDONED: "true",
            },
        }),
    )
    .await;
    timeout(Duration::from_secs(20), boots.changed())
        .await
        .expect("a reboot")
        .expect("boot");
    assert_eq!(boots.borrow().version, FCOS_NEXT);
    assert_eq!(annotations(&w).await[keys::REBOOT_ACK], "1");
    agent.abort();
    let _agent = start_agent(&w).await;
    wait_annotation(&mut w, keys::BOOTED_SLOT, Some(checksum_of(FCOS_NEXT))).await;
    let a = annotations(&w).await;
    assert_eq!(a[keys::BOOTED_VERSION], FCOS_NEXT);
    assert!(!a.contains_key(keys::STAGED_VERSION), "{a:?}");
    assert_no_further_boot(&mut boots, "rebooted twice for one grant").await;
    assert_eq!(w.sim.reboots().borrow().number, 2);
}

#[tokio::test]
async fn on_fcos_the_operators_channel_moves_the_origin_without_applying_it() {
    let mut w = fcos_world().await;
    w.sim
        .ostree()
        .expect("rpm-ostree")
        .publish(&fcos_ref("testing"), "41.20241118.2.0");
    let _agent = start_agent(&w).await;
    wait_annotation(&mut w, keys::STAGED_VERSION, Some(FCOS_NEXT.into())).await;
    let mut boots = w.sim.reboots();
    boots.borrow_and_update();
    operator_apply(
        &w,
        serde_json::json!({"annotations": {keys::DESIRED_CHANNEL: "testing"}}),
    )
    .await;
    wait_annotation(&mut w, keys::CHANNEL, Some("testing".into())).await;
    wait_annotation(&mut w, keys::STAGED_VERSION, Some("41.20241118.2.0".into())).await;
    let staged = w
        .sim
        .ostree()
        .expect("rpm-ostree")
        .staged()
        .expect("staged");
    assert_eq!(staged.origin, "fedora:fedora/x86_64/coreos/testing");
    assert!(staged.finalization_locked);
    assert_no_further_boot(&mut boots, "a channel change must not reboot").await;
    // A channel that is not a stream name is refused with a reason, not rebased to.
    operator_apply(
        &w,
        serde_json::json!({"annotations": {keys::DESIRED_CHANNEL: "../../etc"}}),
    )
    .await;
    let nodes: Api<Node> = Api::all(w.env.client());
    w.env
        .wait_for(
            "the refusal in the status message",
            Duration::from_secs(20),
            move || {
                let nodes = nodes.clone();
                async move {
                    let n = nodes.get(NODE).await?;
                    Ok(n.metadata
                        .annotations
                        .unwrap_or_default()
                        .get(keys::AGENT_MESSAGE)
                        .is_some_and(|m| m.contains("is not a stream name")))
                }
            },
        )
        .await
        .expect("message");
}

/// An HTTP server answering every request with what the test last set (status, body).
struct Canned {
    url: String,
    answer: std::sync::Arc<std::sync::Mutex<(u16, String)>>,
    task: JoinHandle<()>,
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn canned() -> Canned {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let answer = std::sync::Arc::new(std::sync::Mutex::new((200u16, String::new())));
    let a = answer.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let (status, body) = a.lock().map(|g| g.clone()).unwrap_or_default();
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
        }
    });
    Canned { url, answer, task }
}

async fn wait_message(w: &mut World, needle: &str) {
    let what = format!("agent-message containing {needle:?}");
    let needle = needle.to_string();
    wait_annotations(w, &what, move |a| {
        a.get(keys::AGENT_MESSAGE)
            .is_some_and(|m| m.contains(&needle))
    })
    .await;
}

#[tokio::test]
async fn on_fcos_a_broken_cincinnati_answer_is_shown_and_nothing_is_staged() {
    let mut w = fcos_world().await;
    let server = canned().await;
    let set = |status: u16, body: &str| {
        if let Ok(mut g) = server.answer.lock() {
            *g = (status, body.to_string());
        }
    };
    set(
        400,
        r#"{"kind":"missing_params","value":"mandatory parameter \"stream\" is missing"}"#,
    );
    let _agent = start_agent_with(&w, Duration::from_secs(1), Some(server.url.clone())).await;
    wait_message(&mut w, "update check failed: GET http://").await;
    wait_message(
        &mut w,
        "HTTP 400 Bad Request (missing_params: mandatory parameter",
    )
    .await;
    set(200, "<html>not a graph</html>");
    wait_message(&mut w, "the update graph is not JSON").await;
    set(
        200,
        r#"{"nodes":[{"version":"x","payload":"y"}],"edges":[]}"#,
    );
    wait_message(
        &mut w,
        "the update graph's nodes[0].metadata: is missing or not an object",
    )
    .await;
    set(200, r#"{"nodes":[],"edges":[]}"#);
    wait_message(&mut w, "is not in stream stable's update graph").await;
    let ostree = w.sim.ostree().expect("rpm-ostree");
    assert!(
        ostree.staged().is_none(),
        "nothing staged from a broken answer"
    );
    // A good graph then stages its newest edge.
    let graph = drydock_sim::cincinnati::graph(&[
        drydock_sim::cincinnati::ReleaseSpec::new(FCOS_BOOTED),
        drydock_sim::cincinnati::ReleaseSpec::new(FCOS_NEXT),
    ]);
    set(200, &graph.to_string());
    wait_annotation(&mut w, keys::STAGED_VERSION, Some(FCOS_NEXT.into())).await;
    let staged = w
        .sim
        .ostree()
        .expect("rpm-ostree")
        .staged()
        .expect("staged");
    assert!(staged.finalization_locked, "staged locked");
    assert_eq!(staged.checksum, checksum_of(FCOS_NEXT));
}
