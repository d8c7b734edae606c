//! Simulated machines (a private bus, a simulated Flatcar or Fedora CoreOS host, and a
//! real agent restarted on every boot) and operator replicas run in the test process.

use std::time::Duration;

use drydock_host::update_engine::{Client as UeClient, Event as UeEvent, Operation};
use drydock_operator::leader::LeaseConfig;
use drydock_sim::bus::PrivateBus;
use drydock_sim::host::{FcosOptions, FlatcarOptions, SimHost};
use drydock_sim::update_engine::Offer;
use drydock_testenv::TestEnv;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::NS;

/// The version every machine boots first.
pub const FROM: &str = "4081.2.0";
/// The version tests update to.
pub const TO: &str = "4230.0.0";

/// One simulated machine: its bus, files, services, and its agent (restarted on boot).
pub struct Machine {
    /// The node's name.
    pub name: String,
    _bus: PrivateBus,
    /// The host's files.
    pub root: tempfile::TempDir,
    /// The simulated host.
    pub sim: SimHost,
    /// Its bus.
    pub bus_address: String,
    supervisor: JoinHandle<()>,
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

/// How a machine's agent checks (CoreOS).
#[derive(Clone)]
struct Checks {
    interval: Duration,
    cincinnati: Option<String>,
}

fn agent_task(
    client: kube::Client,
    name: String,
    bus: zbus::Connection,
    root: std::path::PathBuf,
    checks: Checks,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let cfg = drydock_agent::Config {
            node_name: name,
            client,
            bus,
            host_root: root,
            agent_version: "test".into(),
            check_interval: checks.interval,
            cincinnati: checks.cincinnati,
        };
        let _ = drydock_agent::run(cfg).await;
    })
}

/// A Flatcar machine on [`FROM`] with 10 ms update steps and no Omaha server.
pub async fn machine(env: &TestEnv, name: &str, reboot_delay: Duration) -> Machine {
    let mut o = FlatcarOptions::new(FROM);
    o.step = Duration::from_millis(10);
    o.reboot_delay = reboot_delay;
    machine_with(env, name, o).await
}

/// A Flatcar machine as `options` say.
pub async fn machine_with(env: &TestEnv, name: &str, options: FlatcarOptions) -> Machine {
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let root = tempfile::tempdir().expect("host root");
    let sim = SimHost::start(bus.address(), root.path(), options)
        .await
        .expect("simulated host");
    let checks = Checks {
        interval: drydock_agent::DEFAULT_CHECK_INTERVAL,
        cincinnati: None,
    };
    supervise(env, name, bus, root, sim, checks)
}

/// A Fedora CoreOS machine as `options` say, whose agent checks the Cincinnati server at
/// `cincinnati` every second.
pub async fn fcos_machine(
    env: &TestEnv,
    name: &str,
    options: FcosOptions,
    cincinnati: &str,
) -> Machine {
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let root = tempfile::tempdir().expect("host root");
    let sim = SimHost::start_fcos(bus.address(), root.path(), options)
        .await
        .expect("simulated host");
    let checks = Checks {
        interval: Duration::from_secs(1),
        cincinnati: Some(cincinnati.to_string()),
    };
    supervise(env, name, bus, root, sim, checks)
}

/// Runs the machine's agent, started again after every boot.
fn supervise(
    env: &TestEnv,
    name: &str,
    bus: PrivateBus,
    root: tempfile::TempDir,
    sim: SimHost,
    checks: Checks,
) -> Machine {
    let address = bus.address().to_string();
    let client = env.client();
    let node = name.to_string();
    let rootp = root.path().to_path_buf();
    let mut boots = sim.reboots();
    let mut downs = sim.shutdowns();
    let supervisor = tokio::spawn(async move {
        // The agent is a process of the host: it dies as the host powers off and starts
        // again with the next boot.
        loop {
            let conn = match zbus::connection::Builder::address(address.as_str()) {
                Ok(b) => b.build().await,
                Err(e) => Err(e),
            };
            let Ok(conn) = conn else { return };
            let agent = agent_task(
                client.clone(),
                node.clone(),
                conn,
                rootp.clone(),
                checks.clone(),
            );
            if downs.changed().await.is_err() {
                agent.abort();
                return;
            }
            agent.abort();
            if boots.changed().await.is_err() {
                return;
            }
        }
    });
    Machine {
        name: name.into(),
        bus_address: bus.address().to_string(),
        _bus: bus,
        root,
        sim,
        supervisor,
    }
}

impl Machine {
    /// Stages 4230.0.0 as update_engine's own check would.
    pub async fn stage(&self) {
        self.sim.update_engine().set_offer(Some(Offer {
            version: TO.into(),
            size: 1000,
            fail_download: false,
        }));
        let conn = zbus::connection::Builder::address(self.bus_address.as_str())
            .expect("address")
            .build()
            .await
            .expect("connect");
        let client = UeClient::new(conn);
        let mut events = client.watch().await.expect("watch");
        client.attempt_update().await.expect("AttemptUpdate");
        loop {
            let e = timeout(Duration::from_secs(20), events.recv())
                .await
                .expect("staged in time")
                .expect("event");
            if matches!(e, UeEvent::Status(s) if s.operation == Operation::UpdatedNeedReboot) {
                return;
            }
        }
    }

    /// Boots so far.
    pub fn boots(&self) -> u32 {
        self.sim.reboots().borrow().number
    }
}

/// A replica of the operator, run in this process (aborting it is a SIGKILL: no lease
/// release, nothing left running).
pub fn replica(env: &TestEnv, identity: &str) -> JoinHandle<()> {
    replica_on(env, identity, None)
}

/// A replica serving HTTP on `listen`.
pub fn replica_on(
    env: &TestEnv,
    identity: &str,
    listen: Option<std::net::SocketAddr>,
) -> JoinHandle<()> {
    replica_with(env, identity, listen, Upstreams::default())
}

/// The upstream servers a replica's endpoints ask (None: that endpoint is off).
#[derive(Default)]
pub struct Upstreams {
    /// Omaha, for the proxy at `/v1/update/`.
    pub omaha: Option<drydock_operator::omaha_proxy::ProxyConfig>,
    /// Cincinnati, for Zincati's `/v1/graph` and FleetLock.
    pub zincati: Option<drydock_operator::zincati::ZincatiConfig>,
}

/// A replica serving HTTP on `listen`, with the endpoints that ask `upstreams`.
pub fn replica_with(
    env: &TestEnv,
    identity: &str,
    listen: Option<std::net::SocketAddr>,
    upstreams: Upstreams,
) -> JoinHandle<()> {
    spawn_replica(env, identity, listen, upstreams, Duration::from_secs(1))
}

/// A replica that looks at a waiting drain every `drain_poll` (the others: every second).
pub fn replica_polling(env: &TestEnv, identity: &str, drain_poll: Duration) -> JoinHandle<()> {
    spawn_replica(env, identity, None, Upstreams::default(), drain_poll)
}

fn spawn_replica(
    env: &TestEnv,
    identity: &str,
    listen: Option<std::net::SocketAddr>,
    upstreams: Upstreams,
    drain_poll: Duration,
) -> JoinHandle<()> {
    let cfg = drydock_operator::Config {
        client: env.client(),
        namespace: NS.into(),
        config_map: "drydock-config".into(),
        lease: LeaseConfig {
            name: "drydock-operator".into(),
            namespace: NS.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(4),
            renew_deadline: Duration::from_secs(3),
            retry_period: Duration::from_millis(500),
        },
        listen,
        drain_poll,
        omaha: upstreams.omaha,
        zincati: upstreams.zincati,
    };
    tokio::spawn(async move {
        if let Err(e) = drydock_operator::run(cfg).await {
            eprintln!("operator stopped: {e}");
        }
    })
}
