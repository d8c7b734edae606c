//! The logind client against the simulated logind on a private dbus-daemon.

use std::time::Duration;

use drydock_host::logind::Logind;
use drydock_sim::bus::PrivateBus;
use drydock_sim::logind as sim;

#[tokio::test]
async fn reboot_asks_non_interactively_and_reports_refusals_and_absence() {
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let client = Logind::new(bus.connect().await.expect("connect"));
    let err = client.reboot().await.expect_err("no logind yet");
    assert_eq!(err.kind(), "absent", "{err}");

    let (logind, mut requests) = sim::Logind::new();
    let _service = sim::serve(bus.address(), logind.clone())
        .await
        .expect("serve logind");
    client.reboot().await.expect("Reboot accepted");
    let interactive = tokio::time::timeout(Duration::from_secs(5), requests.recv())
        .await
        .expect("in time")
        .expect("a request");
    assert!(
        !interactive,
        "the agent must never ask for interactive authorization"
    );

    logind.refuse(Some("a shutdown is already scheduled"));
    let err = client.reboot().await.expect_err("refused");
    assert_eq!(err.kind(), "refused");
    assert_eq!(
        err.to_string(),
        "logind refused the reboot: org.freedesktop.login1.OperationInProgress: a shutdown is already scheduled"
    );
    assert!(
        requests.try_recv().is_err(),
        "a refused reboot is not a reboot"
    );
}
