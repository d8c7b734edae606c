//! The update_engine client against the simulated update_engine on a real, private
//! dbus-daemon: state machine, forged signals, absence, owner changes, failures.

use std::time::Duration;

use drydock_host::update_engine::{Client, Event, NewVersion, Operation};
use drydock_sim::bus::PrivateBus;
use drydock_sim::update_engine::{self as sim, Offer, UpdateEngine};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const STEP: Duration = Duration::from_millis(20);

async fn next(rx: &mut Receiver<Event>) -> Event {
    timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10s")
        .expect("the watch is running")
}

/// Reads events until `f` accepts one; returns the operations seen on the way.
async fn until(rx: &mut Receiver<Event>, mut f: impl FnMut(&Event) -> bool) -> Vec<Operation> {
    let mut seen = Vec::new();
    loop {
        let e = next(rx).await;
        if let Event::Status(s) = &e {
            seen.push(s.operation);
        }
        if f(&e) {
            return seen;
        }
    }
}

#[tokio::test]
async fn an_attempt_runs_through_the_state_machine_to_need_reboot() {
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let engine = UpdateEngine::new(STEP);
    engine.set_offer(Some(Offer {
        version: "4230.0.0".into(),
        size: 450_000_000,
        fail_download: false,
    }));
    let _service = sim::serve(bus.address(), engine.clone())
        .await
        .expect("serve the sim");
    let client = Client::new(bus.connect().await.expect("connect"));
    let mut rx = client.watch().await.expect("watch");
    assert!(matches!(next(&mut rx).await, Event::Status(s) if s.operation == Operation::Idle));
    client.attempt_update().await.expect("AttemptUpdate");
    let seen = until(
        &mut rx,
        |e| matches!(e, Event::Status(s) if s.operation == Operation::UpdatedNeedReboot),
    )
    .await;
    let mut order = seen.clone();
    order.dedup();
    assert_eq!(
        order,
        vec![
            Operation::CheckingForUpdate,
            Operation::UpdateAvailable,
            Operation::Downloading,
            Operation::Verifying,
            Operation::Finalizing,
            Operation::UpdatedNeedReboot
        ]
    );
    assert_eq!(
        seen.iter()
            .filter(|o| **o == Operation::Downloading)
            .count(),
        5,
        "progress signals while downloading"
    );
    let s = client.status().await.expect("GetStatus");
    assert_eq!(s.new_version, NewVersion::Known("4230.0.0".into()));
    assert_eq!(s.new_size, 450_000_000);
    assert!(s.last_checked_time > 0);
    assert_eq!(s.progress, 1.0);
}

#[tokio::test]
async fn a_forged_signal_from_another_connection_is_ignored() {
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let _service = sim::serve(bus.address(), UpdateEngine::new(STEP))
        .await
        .expect("serve the sim");
    let client = Client::new(bus.connect().await.expect("connect"));
    let mut rx = client.watch().await.expect("watch");
    assert!(matches!(next(&mut rx).await, Event::Status(_)));
    let forger = bus.connect().await.expect("connect the forger");
    forger
        .emit_signal(
            None::<&str>,
            drydock_host::update_engine::PATH,
            drydock_host::update_engine::INTERFACE,
            "StatusUpdate",
            &(
                0i64,
                1.0f64,
                "UPDATE_STATUS_UPDATED_NEED_REBOOT",
                "9999.0.0",
                1i64,
            ),
        )
        .await
        .expect("emit the forged signal");
    match next(&mut rx).await {
        Event::ForgedSignal { sender } => assert_eq!(
            sender,
            forger.unique_name().expect("unique name").to_string()
        ),
        other => panic!("expected the forged signal to be reported and ignored, got {other:?}"),
    }
    assert_eq!(
        client.status().await.expect("GetStatus").operation,
        Operation::Idle
    );
}

#[tokio::test]
async fn absent_then_present_then_restarted_with_the_zero_version_quirk() {
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let client = Client::new(bus.connect().await.expect("connect"));
    assert!(matches!(client.status().await, Err(e) if e.kind() == "absent"));
    let mut rx = client.watch().await.expect("watch");
    assert!(matches!(next(&mut rx).await, Event::Absent));

    let engine = UpdateEngine::new(STEP);
    engine.set_offer(Some(Offer {
        version: "4230.0.0".into(),
        size: 10,
        fail_download: false,
    }));
    let service = sim::serve(bus.address(), engine)
        .await
        .expect("serve the sim");
    assert!(matches!(next(&mut rx).await, Event::Status(s) if s.operation == Operation::Idle));
    client.attempt_update().await.expect("AttemptUpdate");
    until(
        &mut rx,
        |e| matches!(e, Event::Status(s) if s.operation == Operation::UpdatedNeedReboot),
    )
    .await;

    // update_engine restarts: the name's owner goes away, then a new one comes up in
    // NEED_REBOOT reporting 0.0.0.
    drop(service);
    until(&mut rx, |e| matches!(e, Event::Absent)).await;
    let restarted = UpdateEngine::new(STEP).with_status(sim::Status {
        last_checked_time: 1_700_000_000,
        progress: 0.0,
        current_operation: "UPDATE_STATUS_UPDATED_NEED_REBOOT".into(),
        new_version: "0.0.0".into(),
        new_size: 0,
    });
    let _service = sim::serve(bus.address(), restarted)
        .await
        .expect("serve again");
    match next(&mut rx).await {
        Event::Status(s) => {
            assert_eq!(s.operation, Operation::UpdatedNeedReboot);
            assert_eq!(s.new_version, NewVersion::UnknownAfterRestart);
        }
        other => panic!("expected a re-read status after the owner change, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_download_reports_an_error_event_then_idles() {
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let engine = UpdateEngine::new(STEP);
    engine.set_offer(Some(Offer {
        version: "4230.0.0".into(),
        size: 10,
        fail_download: true,
    }));
    let _service = sim::serve(bus.address(), engine)
        .await
        .expect("serve the sim");
    let client = Client::new(bus.connect().await.expect("connect"));
    let mut rx = client.watch().await.expect("watch");
    next(&mut rx).await;
    client.attempt_update().await.expect("AttemptUpdate");
    let seen = until(
        &mut rx,
        |e| matches!(e, Event::Status(s) if s.operation == Operation::ReportingErrorEvent),
    )
    .await;
    assert!(seen.contains(&Operation::Downloading));
    let after = until(
        &mut rx,
        |e| matches!(e, Event::Status(s) if s.operation == Operation::Idle),
    )
    .await;
    assert_eq!(after, vec![Operation::Idle]);
    assert_eq!(
        client.status().await.expect("GetStatus").new_version,
        NewVersion::None
    );
}
