//! The simulated services expose exactly the upstream interfaces: same methods, argument
//! names, types and directions, same signals (compared with `upstream/*.xml`).

use drydock_sim::bus::PrivateBus;
use drydock_sim::rpm_ostree as ostree;
use drydock_sim::update_engine::{self as sim, UpdateEngine};

/// The members of one interface in an introspection document, normalised to lines like
/// `method GetStatus`, `arg out x last_checked_time`, `signal StatusUpdate`.
fn members(xml: &str, interface: &str) -> Vec<String> {
    let start = xml
        .find(&format!("<interface name=\"{interface}\""))
        .unwrap_or_else(|| panic!("interface {interface} not found in:\n{xml}"));
    let end = xml[start..]
        .find("</interface>")
        .map(|e| start + e)
        .expect("closing </interface>");
    let body = &xml[start..end];
    let mut out = Vec::new();
    let mut in_signal = false;
    for tag in body.split('<').skip(1) {
        let tag = tag
            .split('>')
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches('/')
            .trim();
        let name = |attr: &str| -> String {
            tag.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{attr}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        if tag.starts_with("method ") {
            in_signal = false;
            out.push(format!("method {}", name("name")));
        } else if tag.starts_with("signal ") {
            in_signal = true;
            out.push(format!("signal {}", name("name")));
        } else if tag.starts_with("arg ") {
            let dir = name("direction");
            let dir = if dir.is_empty() {
                if in_signal {
                    "out".to_string()
                } else {
                    "in".to_string()
                }
            } else {
                dir
            };
            out.push(format!("arg {dir} {} {}", name("type"), name("name")));
        } else if tag.starts_with("property ") {
            out.push(format!(
                "property {} {} {}",
                name("name"),
                name("type"),
                name("access")
            ));
        }
    }
    out
}

#[tokio::test]
async fn update_engine_matches_the_upstream_introspection() {
    let upstream = include_str!("../upstream/update_engine.xml");
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let _service = sim::serve(bus.address(), UpdateEngine::default())
        .await
        .expect("serve");
    let conn = bus.connect().await.expect("connect");
    let reply = conn
        .call_method(
            Some(sim::BUS_NAME),
            sim::PATH,
            Some("org.freedesktop.DBus.Introspectable"),
            "Introspect",
            &(),
        )
        .await
        .expect("Introspect");
    let ours: String = reply.body().deserialize().expect("XML string");
    let want = members(upstream, "com.coreos.update1.Manager");
    assert_eq!(
        want,
        vec![
            "method AttemptUpdate",
            "method ResetStatus",
            "method GetStatus",
            "arg out x last_checked_time",
            "arg out d progress",
            "arg out s current_operation",
            "arg out s new_version",
            "arg out x new_size",
            "signal StatusUpdate",
            "arg out x last_checked_time",
            "arg out d progress",
            "arg out s current_operation",
            "arg out s new_version",
            "arg out x new_size",
        ],
        "the parser reads the upstream file"
    );
    assert_same(&want, &ours, "com.coreos.update1.Manager");
}

/// Member order is not significant on D-Bus; argument order within a member is.
fn group(lines: &[String]) -> Vec<Vec<String>> {
    let mut groups: Vec<Vec<String>> = Vec::new();
    for l in lines {
        if l.starts_with("arg ") {
            if let Some(g) = groups.last_mut() {
                g.push(l.clone());
            }
        } else {
            groups.push(vec![l.clone()]);
        }
    }
    groups.sort();
    groups
}

fn assert_same(want: &[String], ours: &str, interface: &str) {
    assert!(!want.is_empty(), "upstream {interface} has members");
    let got = members(ours, interface);
    assert_eq!(group(&got), group(want), "{interface}; ours:\n{ours}");
}

async fn introspect(conn: &zbus::Connection, dest: Option<&str>, path: &str) -> String {
    let reply = conn
        .call_method(
            dest,
            path,
            Some("org.freedesktop.DBus.Introspectable"),
            "Introspect",
            &(),
        )
        .await
        .expect("Introspect");
    reply.body().deserialize().expect("XML string")
}

const RPM_OSTREE_XML: &str = include_str!("../upstream/org.projectatomic.rpmostree1.xml");

fn fcos(bus: &PrivateBus, dir: &std::path::Path) -> ostree::RpmOstree {
    let _ = bus;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    ostree::RpmOstree::new(
        "fedora-coreos",
        "41.20241109.3.0",
        "fedora/x86_64/coreos/stable",
        std::time::Duration::from_millis(5),
        dir.join("run"),
        tx,
    )
}

#[tokio::test]
async fn rpm_ostree_objects_match_the_upstream_introspection() {
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let dir = tempfile::tempdir().expect("tempdir");
    let _daemon = ostree::serve(bus.address(), fcos(&bus, dir.path()))
        .await
        .expect("serve");
    let conn = bus.connect().await.expect("connect");
    let sysroot = introspect(&conn, Some(ostree::BUS_NAME), ostree::SYSROOT_PATH).await;
    let want = members(RPM_OSTREE_XML, "org.projectatomic.rpmostree1.Sysroot");
    assert!(want.contains(&"method RegisterClient".to_string()));
    assert_same(&want, &sysroot, "org.projectatomic.rpmostree1.Sysroot");
    let os = introspect(
        &conn,
        Some(ostree::BUS_NAME),
        &ostree::os_path("fedora-coreos"),
    )
    .await;
    for iface in [
        "org.projectatomic.rpmostree1.OS",
        "org.projectatomic.rpmostree1.OSExperimental",
    ] {
        assert_same(&members(RPM_OSTREE_XML, iface), &os, iface);
    }
    let want_os = members(RPM_OSTREE_XML, "org.projectatomic.rpmostree1.OS");
    for m in [
        "method UpdateDeployment",
        "arg in a{sv} modifiers",
        "method FinalizeDeployment",
        "method Rebase",
        "property Deployments aa{sv} read",
    ] {
        assert!(
            want_os.contains(&m.to_string()) || want.contains(&m.to_string()),
            "the parser reads {m} from the upstream file"
        );
    }
}

#[tokio::test]
async fn rpm_ostree_transactions_match_the_upstream_introspection() {
    let bus = PrivateBus::start().expect("private dbus-daemon");
    let dir = tempfile::tempdir().expect("tempdir");
    let _daemon = ostree::serve(bus.address(), fcos(&bus, dir.path()))
        .await
        .expect("serve");
    let conn = bus.connect().await.expect("connect");
    let options: std::collections::HashMap<&str, zbus::zvariant::Value<'_>> =
        std::collections::HashMap::new();
    let reply = conn
        .call_method(
            Some(ostree::BUS_NAME),
            ostree::os_path("fedora-coreos").as_str(),
            Some(ostree::OS_INTERFACE),
            "UpdateDeployment",
            &(&options, &options),
        )
        .await
        .expect("UpdateDeployment");
    let address: String = reply.body().deserialize().expect("transaction address");
    let p2p = zbus::connection::Builder::address(address.as_str())
        .expect("address")
        .p2p()
        .build()
        .await
        .expect("connect to the transaction");
    let xml = introspect(&p2p, None, "/").await;
    assert_same(
        &members(RPM_OSTREE_XML, "org.projectatomic.rpmostree1.Transaction"),
        &xml,
        "org.projectatomic.rpmostree1.Transaction",
    );
}
