//! The rpm-ostree client against a simulated Fedora CoreOS host on a real, private
//! dbus-daemon: registration, deployments and their change notifications, staging with a
//! finalization lock, finalize-and-reboot, rebase, forged signals, owner changes, failed
//! transactions, a refused concurrent transaction, and a rollback.

use std::collections::HashMap;
use std::time::Duration;

use drydock_host::rpm_ostree::{
    Client, Deployment, Event, RpmOstreeError, UpdateRequest, booted_and_staged,
};
use drydock_sim::bus::PrivateBus;
use drydock_sim::host::{FcosOptions, SimHost, fcos_ref};
use drydock_sim::rpm_ostree::checksum_of;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;
use zbus::zvariant::Value;

const BOOTED: &str = "41.20241109.3.0";
const NEXT: &str = "41.20241122.3.0";

struct World {
    bus: PrivateBus,
    sim: SimHost,
    client: Client,
    client_name: String,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = FcosOptions::new(BOOTED);
    o.step = Duration::from_millis(10);
    o.reboot_delay = Duration::from_millis(100);
    let sim = SimHost::start_fcos(bus.address(), dir.path(), o)
        .await
        .expect("simulated FCOS host");
    let conn = bus.connect().await.expect("connect");
    let client_name = conn
        .unique_name()
        .map(|n| n.to_string())
        .expect("a unique name");
    let client = Client::new(conn);
    World {
        bus,
        sim,
        client,
        client_name,
        _dir: dir,
    }
}

fn ostree(w: &World) -> &drydock_sim::rpm_ostree::RpmOstree {
    w.sim.ostree().expect("an FCOS host has rpm-ostree")
}

async fn next(rx: &mut Receiver<Event>) -> Event {
    timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10s")
        .expect("the watch is running")
}

/// Reads events until the deployments satisfy `f`.
async fn until_deployments(
    rx: &mut Receiver<Event>,
    f: impl Fn(&[Deployment]) -> bool,
) -> Vec<Deployment> {
    loop {
        if let Event::Deployments(d) = next(rx).await
            && f(&d)
        {
            return d;
        }
    }
}

/// Stages the head of the booted stream with `lock-finalization`, as the agent does.
async fn stage_locked(w: &World) -> Result<(), RpmOstreeError> {
    w.client
        .update_deployment(&UpdateRequest {
            lock_finalization: true,
            ..UpdateRequest::default()
        })
        .await
}

fn staged_locked(next: &str) -> impl Fn(&[Deployment]) -> bool + '_ {
    move |d| {
        booted_and_staged(d)
            .1
            .is_some_and(|s| s.version.as_deref() == Some(next) && s.finalization_locked)
    }
}

#[tokio::test]
async fn register_and_read_the_booted_deployment() {
    let w = world().await;
    w.client.register().await.expect("RegisterClient");
    assert_eq!(ostree(&w).clients(), vec![w.client_name.clone()]);
    let d = w.client.deployments().await.expect("Deployments");
    assert_eq!(d.len(), 1);
    let booted = &d[0];
    assert!(booted.booted && !booted.staged && !booted.pinned);
    assert_eq!(booted.version.as_deref(), Some(BOOTED));
    assert_eq!(booted.checksum, checksum_of(BOOTED));
    assert_eq!(booted.stream(), Some("stable"));
    assert_eq!(
        w.client.booted_os().await.expect("Booted").as_str(),
        "/org/projectatomic/rpmostree1/fedora_coreos"
    );
}

#[tokio::test]
async fn stage_locked_then_finalize_reboots_into_the_new_version() {
    let w = world().await;
    ostree(&w).publish(&fcos_ref("stable"), NEXT);
    let mut rx = w.client.watch().await.expect("watch");
    until_deployments(&mut rx, |d| d.len() == 1).await;
    stage_locked(&w).await.expect("UpdateDeployment");
    // The change arrives as a notification, not only on a re-read.
    let d = until_deployments(&mut rx, staged_locked(NEXT)).await;
    let staged = booted_and_staged(&d).1.expect("staged").clone();
    assert_eq!(staged.checksum, checksum_of(NEXT));
    assert_eq!(
        d[0], staged,
        "the staged deployment comes first in boot order"
    );
    // Staging the same again changes nothing.
    stage_locked(&w).await.expect("a second UpdateDeployment");
    assert_eq!(w.client.deployments().await.expect("Deployments"), d);

    let mut boots = w.sim.reboots();
    boots.borrow_and_update();
    w.client
        .finalize(&staged.checksum)
        .await
        .expect("FinalizeDeployment");
    timeout(Duration::from_secs(10), boots.changed())
        .await
        .expect("a boot within 10s")
        .expect("boots");
    let boot = boots.borrow().clone();
    assert_eq!(
        (boot.number, boot.version.as_str(), boot.rolled_back),
        (2, NEXT, false)
    );
    assert_eq!(boot.slot, checksum_of(NEXT));
    // The daemon went away and came back as a new owner; the watch followed.
    let d = until_deployments(&mut rx, |d| {
        booted_and_staged(d)
            .0
            .is_some_and(|b| b.version.as_deref() == Some(NEXT))
    })
    .await;
    assert_eq!(d.len(), 2, "new booted and the rollback: {d:?}");
    assert!(booted_and_staged(&d).1.is_none());
    let os_release =
        std::fs::read_to_string(w.sim.root().join("etc/os-release")).expect("os-release");
    assert!(os_release.contains(&format!("OSTREE_VERSION='{NEXT}'")));
}

#[tokio::test]
async fn a_locked_update_is_not_applied_by_an_unplanned_reboot() {
    let w = world().await;
    ostree(&w).publish(&fcos_ref("stable"), NEXT);
    stage_locked(&w).await.expect("UpdateDeployment");
    let mut boots = w.sim.reboots();
    boots.borrow_and_update();
    drydock_host::logind::Logind::new(w.bus.connect().await.expect("connect"))
        .reboot()
        .await
        .expect("Reboot");
    timeout(Duration::from_secs(10), boots.changed())
        .await
        .expect("a boot")
        .expect("boots");
    let boot = boots.borrow().clone();
    assert_eq!((boot.version.as_str(), boot.rolled_back), (BOOTED, false));
    assert!(
        ostree(&w).staged().is_none(),
        "the locked deployment is gone"
    );
}

#[tokio::test]
async fn finalize_checks_the_checksum_and_failures_carry_the_daemons_message() {
    let w = world().await;
    ostree(&w).publish(&fcos_ref("stable"), NEXT);
    let e = w
        .client
        .finalize(&checksum_of(NEXT))
        .await
        .expect_err("nothing is staged");
    assert!(
        matches!(&e, RpmOstreeError::TransactionFailed { message, .. } if message == "No staged deployment found"),
        "{e}"
    );
    stage_locked(&w).await.expect("UpdateDeployment");
    let e = w
        .client
        .finalize(&checksum_of(BOOTED))
        .await
        .expect_err("wrong checksum");
    assert_eq!(e.kind(), "transaction_failed");
    assert!(
        e.to_string().contains("Expected staged base checksum"),
        "{e}"
    );
    assert!(ostree(&w).staged().is_some_and(|s| s.finalization_locked));

    ostree(&w).fail_next_transaction(
        "While pulling fedora/x86_64/coreos/stable: Server returned HTTP 404",
    );
    let e = w
        .client
        .update_deployment(&UpdateRequest::default())
        .await
        .expect_err("a failed pull");
    assert!(e.to_string().contains("HTTP 404"), "{e}");
}

#[tokio::test]
async fn downgrades_need_permission_and_unknown_revisions_are_errors() {
    let w = world().await;
    let older = "41.20241027.3.0";
    ostree(&w).publish(&fcos_ref("stable"), older);
    let req = UpdateRequest {
        revision: Some(checksum_of(older)),
        lock_finalization: true,
        allow_downgrade: Some(false),
        ..UpdateRequest::default()
    };
    let e = w.client.update_deployment(&req).await.expect_err("older");
    assert!(e.to_string().contains("chronologically older"), "{e}");
    let e = w
        .client
        .update_deployment(&UpdateRequest {
            revision: Some(format!("version={}", "41.20990101.3.0")),
            ..UpdateRequest::default()
        })
        .await
        .expect_err("no such version");
    assert!(e.to_string().contains("Unable to find version"), "{e}");
    w.client
        .update_deployment(&UpdateRequest {
            allow_downgrade: Some(true),
            ..req
        })
        .await
        .expect("allowed downgrade");
    assert_eq!(
        ostree(&w).staged().map(|s| s.version),
        Some(older.to_string())
    );
}

#[tokio::test]
async fn rebase_and_set_refspec_move_to_another_stream() {
    let w = world().await;
    ostree(&w).publish(&fcos_ref("testing"), "41.20241118.2.0");
    w.client
        .rebase("fedora/x86_64/coreos/testing")
        .await
        .expect("Rebase");
    let staged = ostree(&w).staged().expect("staged");
    assert_eq!(staged.origin, "fedora:fedora/x86_64/coreos/testing");
    assert!(!staged.finalization_locked, "upstream Rebase cannot lock");
    w.client
        .update_deployment(&UpdateRequest {
            refspec: Some("fedora:fedora/x86_64/coreos/testing".into()),
            lock_finalization: true,
            ..UpdateRequest::default()
        })
        .await
        .expect("UpdateDeployment set-refspec");
    assert!(ostree(&w).staged().is_some_and(|s| s.finalization_locked));
    let e = w
        .client
        .rebase("fedora/x86_64/coreos/nonexistent")
        .await
        .expect_err("no such ref");
    assert!(e.to_string().contains("No such branch"), "{e}");
}

#[tokio::test]
async fn a_second_transaction_while_one_runs_is_refused() {
    let w = world().await;
    ostree(&w).publish(&fcos_ref("stable"), NEXT);
    // Another client starts a transaction and never follows it.
    let other = w.bus.connect().await.expect("connect");
    let empty: HashMap<&str, Value<'_>> = HashMap::new();
    other
        .call_method(
            Some(drydock_host::rpm_ostree::BUS_NAME),
            "/org/projectatomic/rpmostree1/fedora_coreos",
            Some(drydock_host::rpm_ostree::OS_INTERFACE),
            "UpdateDeployment",
            &(&empty, &empty),
        )
        .await
        .expect("UpdateDeployment by another client");
    let e = w
        .client
        .update_deployment(&UpdateRequest::default())
        .await
        .expect_err("in progress");
    match &e {
        RpmOstreeError::Refused { name, .. } => {
            assert_eq!(name, "org.projectatomic.rpmostreed.Error.UpdateInProgress")
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(e.kind(), "refused");
}

#[tokio::test]
async fn forged_notifications_are_ignored_and_owner_changes_followed() {
    let w = world().await;
    let mut rx = w.client.watch().await.expect("watch");
    until_deployments(&mut rx, |d| d.len() == 1).await;
    let forger = w.bus.connect().await.expect("connect the forger");
    let changed: HashMap<&str, Value<'_>> = HashMap::new();
    forger
        .emit_signal(
            None::<&str>,
            drydock_host::rpm_ostree::SYSROOT_PATH,
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
            &(
                drydock_host::rpm_ostree::SYSROOT_INTERFACE,
                changed,
                Vec::<String>::new(),
            ),
        )
        .await
        .expect("forge");
    match next(&mut rx).await {
        Event::ForgedSignal { sender } => {
            assert_eq!(Some(sender), forger.unique_name().map(|n| n.to_string()))
        }
        other => panic!("expected ForgedSignal, got {other:?}"),
    }
    w.sim.stop_update_engine();
    assert!(matches!(next(&mut rx).await, Event::Absent));
    assert!(matches!(
        w.client.deployments().await,
        Err(RpmOstreeError::Absent)
    ));
    w.sim
        .start_update_engine()
        .await
        .expect("restart rpm-ostreed");
    until_deployments(&mut rx, |d| d.len() == 1).await;
    // The new daemon knows the client again.
    assert_eq!(ostree(&w).clients().len(), 1);
}

#[tokio::test]
async fn a_failed_boot_rolls_back_to_the_old_deployment() {
    let w = world().await;
    ostree(&w).publish(&fcos_ref("stable"), NEXT);
    stage_locked(&w).await.expect("UpdateDeployment");
    w.sim.fail_next_boot();
    let mut boots = w.sim.reboots();
    boots.borrow_and_update();
    w.client
        .finalize(&checksum_of(NEXT))
        .await
        .expect("FinalizeDeployment");
    timeout(Duration::from_secs(10), boots.changed())
        .await
        .expect("a boot")
        .expect("boots");
    let boot = boots.borrow().clone();
    assert_eq!((boot.version.as_str(), boot.rolled_back), (BOOTED, true));
    assert_eq!(boot.slot, checksum_of(BOOTED));
}
