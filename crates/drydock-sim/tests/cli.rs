//! The `drydock-sim` command line: an Omaha server and a host, as separate processes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use drydock_sim::bus::PrivateBus;

#[tokio::test]
async fn host_and_omaha_run_as_commands() {
    let bin = env!("CARGO_BIN_EXE_drydock-sim");
    let mut omaha = Command::new(bin)
        .args([
            "omaha",
            "--release",
            "stable=4230.0.0",
            "--release",
            "beta=4300.0.0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("omaha starts");
    let url = BufReader::new(omaha.stdout.take().expect("stdout"))
        .lines()
        .next()
        .expect("a line")
        .expect("url");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/v1/update/"),
        "{url}"
    );

    let bus = PrivateBus::start().expect("dbus-daemon");
    let root = tempfile::tempdir().expect("root");
    let mut host = Command::new(bin)
        .args([
            "host",
            "--bus",
            bus.address(),
            "--os",
            "flatcar",
            "--version",
            "4081.2.0",
            "--omaha",
            &url,
            "--root",
        ])
        .arg(root.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("host starts");
    let first = BufReader::new(host.stdout.take().expect("stdout"))
        .lines()
        .next()
        .expect("a line")
        .expect("boot line");
    let boot: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(boot["boot"], 1);
    assert_eq!(boot["slot"], "a");
    let conf = std::fs::read_to_string(root.path().join("usr/share/flatcar/update.conf"))
        .expect("update.conf");
    assert!(conf.contains(&format!("SERVER={url}")), "{conf}");
    // The host's update_engine is on the bus.
    let conn = bus.connect().await.expect("connect");
    let reply = conn
        .call_method(
            Some("com.coreos.update1"),
            "/com/coreos/update1",
            Some("com.coreos.update1.Manager"),
            "GetStatus",
            &(),
        )
        .await
        .expect("GetStatus");
    let (_, _, op, _, _): (i64, f64, String, String, i64) =
        reply.body().deserialize().expect("xdssx");
    assert_eq!(op, "UPDATE_STATUS_IDLE");

    let bad = Command::new(bin)
        .args(["omaha", "--release", "nonsense"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not CHANNEL=VERSION"));

    let _ = host.kill();
    let _ = omaha.kill();
    let _ = host.wait();
    let _ = omaha.wait();
}

#[tokio::test]
async fn an_fcos_host_serves_rpm_ostree_with_its_remote() {
    let bin = env!("CARGO_BIN_EXE_drydock-sim");
    let bus = PrivateBus::start().expect("dbus-daemon");
    let root = tempfile::tempdir().expect("root");
    let mut host = Command::new(bin)
        .args([
            "host",
            "--bus",
            bus.address(),
            "--os",
            "fcos",
            "--version",
            "41.20241109.3.0",
            "--remote",
            "stable=41.20241122.3.0",
            "--root",
        ])
        .arg(root.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("host starts");
    let first = BufReader::new(host.stdout.take().expect("stdout"))
        .lines()
        .next()
        .expect("a line")
        .expect("boot line");
    let boot: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(boot["boot"], 1);
    assert_eq!(boot["version"], "41.20241109.3.0");
    assert_eq!(
        boot["slot"],
        drydock_sim::rpm_ostree::checksum_of("41.20241109.3.0")
    );
    let os_release =
        std::fs::read_to_string(root.path().join("etc/os-release")).expect("os-release");
    assert!(os_release.contains("VARIANT_ID=coreos"), "{os_release}");
    let conn = bus.connect().await.expect("connect");
    let reply = conn
        .call_method(
            Some(drydock_sim::rpm_ostree::BUS_NAME),
            drydock_sim::rpm_ostree::SYSROOT_PATH,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(drydock_sim::rpm_ostree::SYSROOT_INTERFACE, "Booted"),
        )
        .await
        .expect("Get Booted");
    let booted: zbus::zvariant::OwnedValue = reply.body().deserialize().expect("v");
    assert_eq!(
        zbus::zvariant::ObjectPath::try_from(booted)
            .expect("o")
            .as_str(),
        "/org/projectatomic/rpmostree1/fedora_coreos"
    );
    let _ = host.kill();
    let _ = host.wait();

    for (args, want) in [
        (vec!["--version", "4081.2.0"], "--version \"4081.2.0\""),
        (
            vec!["--version", "41.20241109.3.0", "--omaha", "http://x"],
            "--omaha is for --os flatcar",
        ),
        (
            vec!["--version", "41.20241109.3.0", "--remote", "stable=banana"],
            "--remote stable=banana",
        ),
    ] {
        let out = Command::new(bin)
            .args(["host", "--bus", bus.address(), "--os", "fcos", "--root"])
            .arg(root.path())
            .args(&args)
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
