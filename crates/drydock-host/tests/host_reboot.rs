//! drydock's host clients against a whole simulated Flatcar host: an update is staged in
//! the spare slot, logind reboots, and the host comes back on the other slot — or, when
//! that boot fails, rolls back to the old one.

use std::time::Duration;

use drydock_host::facts::{Family, Host, UsrSlot};
use drydock_host::logind::Logind;
use drydock_host::update_engine::{Client, Event, Operation};
use drydock_sim::bus::PrivateBus;
use drydock_sim::host::SimHost;
use drydock_sim::update_engine::Offer;
use tokio::time::timeout;

const STEP: Duration = Duration::from_millis(10);

/// Runs the scenario; returns the host's root (kept alive), its view, the boot id before,
/// the boot that happened and the client's events after the reboot.
async fn stage_and_reboot(
    fail_boot: bool,
) -> (
    tempfile::TempDir,
    Host,
    String,
    drydock_sim::host::Boot,
    Vec<String>,
) {
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let root = tempfile::tempdir().expect("root");
    let sim = SimHost::start_flatcar(
        bus.address(),
        root.path(),
        "4081.2.0",
        STEP,
        Duration::from_millis(100),
    )
    .await
    .expect("simulated host");
    let host = Host::new(root.path());
    assert_eq!(
        host.os_release().expect("os-release"),
        (Family::Flatcar, "4081.2.0".into())
    );
    assert_eq!(host.booted_slot().expect("slot"), UsrSlot::A);
    let boot_id_before = host.boot_id().expect("boot id");

    sim.update_engine().set_offer(Some(Offer {
        version: "4230.0.0".into(),
        size: 1000,
        fail_download: false,
    }));
    let conn = bus.connect().await.expect("connect");
    let ue = Client::new(conn.clone());
    let mut events = ue.watch().await.expect("watch");
    ue.attempt_update().await.expect("AttemptUpdate");
    loop {
        match timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("in time")
            .expect("event")
        {
            Event::Status(s) if s.operation == Operation::UpdatedNeedReboot => break,
            _ => {}
        }
    }
    if fail_boot {
        sim.fail_next_boot();
    }
    let mut boots = sim.reboots();
    Logind::new(conn).reboot().await.expect("Reboot");
    timeout(Duration::from_secs(10), boots.changed())
        .await
        .expect("boots in time")
        .expect("boot");
    let boot = boots.borrow().clone();
    // What the client saw: update_engine went away and came back as a new process.
    let mut seen = Vec::new();
    loop {
        match timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("in time")
            .expect("event")
        {
            Event::Absent => seen.push("absent".to_string()),
            Event::Status(s) => {
                seen.push(s.operation.as_str().to_string());
                if s.operation == Operation::Idle && seen.contains(&"absent".to_string()) {
                    break;
                }
            }
            other => seen.push(format!("{other:?}")),
        }
    }
    drop((sim, bus));
    (root, host, boot_id_before, boot, seen)
}

#[tokio::test]
async fn a_reboot_boots_the_staged_slot() {
    let (_root, host, boot_id_before, boot, seen) = stage_and_reboot(false).await;
    assert_eq!(boot.number, 2);
    assert!(!boot.rolled_back);
    assert_eq!(host.booted_slot().expect("slot"), UsrSlot::B);
    assert_eq!(host.os_release().expect("os-release").1, "4230.0.0");
    assert_ne!(host.boot_id().expect("boot id"), boot_id_before);
    assert_eq!(seen.last().map(String::as_str), Some("UPDATE_STATUS_IDLE"));
    assert!(seen.contains(&"absent".to_string()), "{seen:?}");
}

#[tokio::test]
async fn a_failed_boot_rolls_back_to_the_old_slot() {
    let (_root, host, boot_id_before, boot, _) = stage_and_reboot(true).await;
    assert!(boot.rolled_back);
    assert_eq!(host.booted_slot().expect("slot"), UsrSlot::A);
    assert_eq!(host.os_release().expect("os-release").1, "4081.2.0");
    assert_ne!(
        host.boot_id().expect("boot id"),
        boot_id_before,
        "a rollback is still a new boot"
    );
}
