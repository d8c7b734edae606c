//! update_engine speaking Omaha: the simulated host's update_engine reads GROUP and
//! SERVER before each check, asks the fake upstream server, downloads the payload and
//! verifies its SHA-256 before staging it; drydock's client watches it all.

use std::collections::BTreeMap;
use std::time::Duration;

use drydock_core::omaha::{self, AppRequest, UpdateCheck};
use drydock_host::update_engine::{Client, Event, NewVersion, Operation};
use drydock_sim::bus::PrivateBus;
use drydock_sim::host::{FlatcarOptions, SimHost};
use drydock_sim::omaha::{OmahaServer, PAYLOAD_BYTES, payload_sha256};
use tokio::time::timeout;

async fn server(releases: &[(&str, &str)]) -> OmahaServer {
    let releases: BTreeMap<String, String> = releases
        .iter()
        .map(|(c, v)| (c.to_string(), v.to_string()))
        .collect();
    OmahaServer::start("127.0.0.1:0".parse().expect("addr"), releases)
        .await
        .expect("fake Omaha server")
}

/// Runs one check on a fresh host; returns the operations seen and the final status.
async fn check(
    srv: &OmahaServer,
    edit: impl FnOnce(&std::path::Path),
) -> (
    Vec<Operation>,
    drydock_host::update_engine::Status,
    tempfile::TempDir,
) {
    let bus = PrivateBus::start().expect("dbus-daemon");
    let root = tempfile::tempdir().expect("root");
    let mut o = FlatcarOptions::new("4081.2.0");
    o.omaha = Some(srv.url());
    o.machine_id = "fedcba9876543210fedcba9876543210".into();
    let _host = SimHost::start(bus.address(), root.path(), o)
        .await
        .expect("host");
    edit(root.path());
    let client = Client::new(bus.connect().await.expect("connect"));
    let mut events = client.watch().await.expect("watch");
    timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("first")
        .expect("event");
    client.attempt_update().await.expect("AttemptUpdate");
    let mut seen = Vec::new();
    loop {
        if let Event::Status(s) = timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("in time")
            .expect("event")
        {
            seen.push(s.operation);
            let settled = matches!(s.operation, Operation::UpdatedNeedReboot)
                || (s.operation == Operation::Idle && seen.len() > 1);
            if settled {
                return (seen, s, root);
            }
        }
    }
}

#[tokio::test]
async fn an_offer_is_downloaded_verified_and_staged() {
    let srv = server(&[("stable", "4230.0.0")]).await;
    let (seen, status, _root) = check(&srv, |_| {}).await;
    assert_eq!(status.operation, Operation::UpdatedNeedReboot);
    assert_eq!(status.new_version, NewVersion::Known("4230.0.0".into()));
    assert_eq!(status.new_size, PAYLOAD_BYTES as i64);
    assert!(seen.contains(&Operation::Downloading) && seen.contains(&Operation::Verifying));
    let req = &srv.requests()[0];
    assert_eq!(
        (
            req.track.as_str(),
            req.version.as_str(),
            req.machineid.as_str()
        ),
        ("stable", "4081.2.0", "fedcba9876543210fedcba9876543210")
    );
    assert!(req.updatecheck);
}

#[tokio::test]
async fn the_channel_is_read_from_update_conf_before_each_check() {
    let srv = server(&[("stable", "4230.0.0"), ("beta", "4300.1.0")]).await;
    let (_, status, _root) = check(&srv, |root| {
        std::fs::create_dir_all(root.join("etc/flatcar")).expect("dir");
        std::fs::write(root.join("etc/flatcar/update.conf"), "GROUP=beta\n").expect("write");
    })
    .await;
    assert_eq!(status.new_version, NewVersion::Known("4300.1.0".into()));
    assert_eq!(srv.requests()[0].track, "beta");
}

#[tokio::test]
async fn nothing_newer_means_idle_and_a_corrupt_payload_is_never_staged() {
    let srv = server(&[("stable", "4081.2.0")]).await;
    let (seen, status, _root) = check(&srv, |_| {}).await;
    assert_eq!(status.operation, Operation::Idle);
    assert!(!seen.contains(&Operation::Downloading));
    assert!(status.last_checked_time > 0);

    let srv = server(&[("stable", "4230.0.0")]).await;
    srv.corrupt_payloads(true);
    let (seen, status, _root) = check(&srv, |_| {}).await;
    assert!(seen.contains(&Operation::ReportingErrorEvent), "{seen:?}");
    assert_eq!(status.operation, Operation::Idle);
    assert_eq!(status.new_version, NewVersion::None);
}

#[tokio::test]
async fn the_fake_server_speaks_the_protocol_and_refuses_garbage() {
    let srv = server(&[("stable", "4230.0.0")]).await;
    let http = reqwest::Client::new();
    let request = omaha::build_request(&AppRequest {
        appid: omaha::FLATCAR_APP_ID.into(),
        version: "4081.2.0".into(),
        track: "stable".into(),
        machineid: "m".into(),
        bootid: "b".into(),
        updatecheck: true,
        events: vec![],
    });
    let reply = http
        .post(srv.url())
        .body(request.clone())
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("body");
    let UpdateCheck::Offer(offer) = omaha::parse_response(&reply).expect("a response") else {
        panic!("an offer: {reply}")
    };
    assert_eq!(offer.sha256, payload_sha256("4230.0.0"));
    let payload = http
        .get(format!("{}{}", offer.codebases[0], offer.package))
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(payload.len() as u64, offer.size);

    // The offered version changes while the server runs.
    let admin = format!("http://{}/admin/releases/stable", srv.addr());
    assert_eq!(
        http.put(&admin)
            .body("4231.0.0")
            .send()
            .await
            .expect("put")
            .status(),
        204
    );
    let reply = http
        .post(srv.url())
        .body(request)
        .send()
        .await
        .expect("post")
        .text()
        .await
        .expect("body");
    assert!(
        matches!(omaha::parse_response(&reply), Ok(UpdateCheck::Offer(o)) if o.version == "4231.0.0")
    );
    assert_eq!(
        http.put(&admin)
            .body("not a version")
            .send()
            .await
            .expect("put")
            .status(),
        400
    );

    let bad = http
        .post(srv.url())
        .body("<request protocol=\"2.0\"/>")
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.text().await.expect("body"),
        "not an Omaha v3 request: protocol is \"2.0\", not \"3.0\"\n"
    );
    let huge = http
        .post(srv.url())
        .body(vec![b' '; 200_000])
        .send()
        .await
        .expect("post");
    assert_eq!(huge.status(), 413, "bounded request size");
}
