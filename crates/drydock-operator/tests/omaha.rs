//! The operator's Omaha proxy on the real control plane: simulated Flatcar hosts whose
//! update_engine asks the operator (update.conf `SERVER`), a fake upstream Omaha server
//! behind it, real agents, and one operator replica.
//!
//! - A pin holds every node at 4081.2.0 while upstream offers 4230.0.0; lifting it lets
//!   the rollout proceed, the canary downloading alone first and never more nodes ahead
//!   than the pool's limit.
//! - A pool's channel change reaches update.conf (`GROUP`) and the `track` upstream sees;
//!   a move back to an older channel is refused with an Event.
//! - Wrong requests and a broken upstream get the exact answers below.

use std::collections::BTreeMap;
use std::time::Duration;

use drydock_core::omaha::{AppRequest, FLATCAR_APP_ID, build_request};
use drydock_core::protocol::keys;
use drydock_operator::omaha_proxy::ProxyConfig;
use drydock_sim::host::FlatcarOptions;
use drydock_sim::omaha::OmahaServer;
use drydock_testenv::TestEnv;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;

mod common;
use common::machines::*;
use common::*;

const NOUPDATE: &str = "<updatecheck status=\"noupdate\"/>";

fn policy(extra: &str) -> String {
    format!(
        "channel: stable\nhealth: {{bake: 0s, readyTimeout: 1m}}\npools:\n  - name: workers\n    nodeSelector: {{node-role.kubernetes.io/worker: \"\"}}\n    maxUnavailable: 1\n    canary: 1\n{extra}"
    )
}

async fn metrics(http: &reqwest::Client, addr: std::net::SocketAddr) -> String {
    http.get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

fn counter(text: &str, line_prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// update_engine checks now (as its own timer would) and settles.
async fn check(m: &Machine, upstream: &OmahaServer) {
    let before = upstream.requests().len();
    let conn = zbus::connection::Builder::address(m.bus_address.as_str())
        .expect("address")
        .build()
        .await
        .expect("connect");
    let client = drydock_host::update_engine::Client::new(conn);
    client.attempt_update().await.expect("AttemptUpdate");
    for _ in 0..200 {
        let op = m.sim.update_engine().status().current_operation;
        if upstream.requests().len() > before
            && (op == "UPDATE_STATUS_IDLE" || op == "UPDATE_STATUS_UPDATED_NEED_REBOOT")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{}'s update check did not settle", m.name);
}

fn staged(m: &Machine) -> bool {
    m.sim.update_engine().status().current_operation == "UPDATE_STATUS_UPDATED_NEED_REBOOT"
}

async fn booted(env: &TestEnv, name: &str) -> Option<String> {
    node_annotations(env, name)
        .await
        .get(keys::BOOTED_VERSION)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_holds_the_fleet_then_downloads_follow_the_rollout_and_channels_follow_the_pool() {
    let (mut env, names) = workers(3).await;
    setup(&env, &policy("    version: \"<4230\"\n")).await;
    let upstream = OmahaServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        BTreeMap::from([
            ("stable".to_string(), TO.to_string()),
            ("beta".to_string(), "4300.0.0".to_string()),
        ]),
    )
    .await
    .expect("upstream");
    let addr = free_addr();
    let _op = replica_with(
        &env,
        "op-a",
        Some(addr),
        Upstreams {
            omaha: Some(ProxyConfig {
                upstream: upstream.url(),
                timeout: Duration::from_secs(5),
            }),
            zincati: None,
        },
    );
    let http = reqwest::Client::new();
    wait_proxy_ready(&http, addr).await;
    let proxy = format!("http://{addr}/v1/update/");
    let mut machines = Vec::new();
    for n in &names {
        let mut o = FlatcarOptions::new(FROM);
        o.step = Duration::from_millis(10);
        o.reboot_delay = Duration::from_millis(300);
        o.omaha = Some(proxy.clone());
        o.machine_id = drydock_testenv::machine_id(n);
        machines.push(machine_with(&env, n, o).await);
    }
    for n in &names {
        let api: Api<Node> = Api::all(env.client());
        let name = n.clone();
        env.wait_for("the agent's report", Duration::from_secs(30), move || {
            let (api, name) = (api.clone(), name.clone());
            async move {
                let node = api.get(&name).await?;
                Ok(node
                    .metadata
                    .annotations
                    .is_some_and(|a| a.contains_key(keys::BOOTED_VERSION)))
            }
        })
        .await
        .expect("agents report");
    }

    // Pinned below 4230: upstream offers it on every check, no node gets it.
    for m in &machines {
        check(m, &upstream).await;
        assert!(!staged(m), "{} must not stage a pinned-out version", m.name);
    }
    let reqs = upstream.requests();
    assert!(reqs.len() >= 3);
    assert!(
        reqs.iter().all(|r| r.track == "stable" && r.updatecheck),
        "{reqs:?}"
    );
    let machine_ids: Vec<String> = names
        .iter()
        .map(|n| drydock_testenv::machine_id(n))
        .collect();
    assert!(reqs.iter().all(|r| machine_ids.contains(&r.machineid)));
    let text = metrics(&http, addr).await;
    assert_eq!(
        counter(
            &text,
            "drydock_omaha_requests_total{outcome=\"withheld-pinned\"} "
        ),
        3,
        "{text}"
    );

    // The pin is lifted: the canary alone downloads first.
    set_policy(&env, &policy("")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for m in &machines {
        check(m, &upstream).await;
    }
    let first: Vec<&str> = machines
        .iter()
        .filter(|m| staged(m))
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(first.len(), 1, "only the canary downloads: {first:?}");

    // Keep checking (update_engine's timer) until every node runs 4230; at no point is
    // more than one node (maxUnavailable 1) ahead of the rest.
    let mut most_ahead = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let mut done = 0;
        let mut ahead = 0;
        for m in &machines {
            if booted(&env, &m.name).await.as_deref() == Some(TO) {
                done += 1;
            } else if staged(m) || m.boots() > 1 {
                ahead += 1;
            }
        }
        most_ahead = most_ahead.max(ahead);
        if done == machines.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rollout did not finish: {done} done"
        );
        for m in &machines {
            if !staged(m) && m.boots() == 1 {
                check(m, &upstream).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(most_ahead, 1, "downloads followed the rollout");
    assert!(machines.iter().all(|m| m.boots() == 2));

    // The pool moves to beta: the operator sets it, the agents write GROUP, and
    // upstream sees track beta.
    set_policy(
        &env,
        &policy("").replace("channel: stable", "channel: beta"),
    )
    .await;
    for m in &machines {
        let conf = m.root.path().join("etc/flatcar/update.conf");
        let mut found = false;
        for _ in 0..100 {
            if std::fs::read_to_string(&conf).is_ok_and(|c| c.contains("GROUP=beta")) {
                found = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            found,
            "{}: GROUP=beta never reached {}",
            m.name,
            conf.display()
        );
    }
    let before = upstream.requests().len();
    check(&machines[0], &upstream).await;
    let after = upstream.requests();
    assert!(
        after[before..].iter().any(|r| r.track == "beta"),
        "{:?}",
        &after[before..]
    );
    let events = events_for(&env, &names[0]).await;
    assert!(
        events
            .iter()
            .any(|(_, r, n)| r == "ChannelSet" && n.contains("beta")),
        "{events:?}"
    );

    // Back to stable is a move to an older channel: refused, visibly.
    set_policy(&env, &policy("")).await;
    let name = names[1].clone();
    let envc = env.client();
    env.wait_for("ChannelChangeRefused", Duration::from_secs(30), move || {
        let (c, name) = (envc.clone(), name.clone());
        async move {
            let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(c);
            Ok(api.list(&Default::default()).await?.items.iter().any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
                    && e.reason.as_deref() == Some("ChannelChangeRefused")
                    && e.note.as_deref().is_some_and(|n| {
                        n.contains("channel stable, older than beta")
                            && n.contains("allowDowngrade")
                    })
            }))
        }
    })
    .await
    .expect("refusal Event");
    let api: Api<Node> = Api::all(env.client());
    let node = api.get(&names[1]).await.expect("node");
    assert_eq!(
        node.metadata
            .annotations
            .unwrap_or_default()
            .get(keys::DESIRED_CHANNEL)
            .map(String::as_str),
        Some("beta"),
        "the refused change was not written"
    );
}

fn request(machineid: &str, updatecheck: bool) -> String {
    build_request(&AppRequest {
        appid: FLATCAR_APP_ID.into(),
        version: FROM.into(),
        track: "stable".into(),
        machineid: machineid.into(),
        bootid: "b".into(),
        updatecheck,
        events: if updatecheck { vec![] } else { vec![(3, 1)] },
    })
}

/// A tiny upstream that answers every request with `status` and `body`.
async fn bad_upstream(status: u16, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(move || async move {
        (
            axum::http::StatusCode::from_u16(status).expect("status"),
            body,
        )
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/v1/update/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_requests_and_a_broken_upstream_get_exact_answers() {
    let (env, names) = workers(1).await;
    setup(&env, &policy("")).await;
    let known = drydock_testenv::machine_id(&names[0]);
    let http = reqwest::Client::new();

    let cases: Vec<(&str, String)> = vec![
        ("unreachable", "http://127.0.0.1:9/v1/update/".to_string()),
        ("status", bad_upstream(500, "oops").await),
        (
            "malformed",
            bad_upstream(200, "<html>not omaha</html>").await,
        ),
    ];
    for (i, (what, upstream)) in cases.into_iter().enumerate() {
        let addr = free_addr();
        let op = replica_with(
            &env,
            &format!("op-{i}"),
            Some(addr),
            Upstreams {
                omaha: Some(ProxyConfig {
                    upstream,
                    timeout: Duration::from_secs(2),
                }),
                zincati: None,
            },
        );
        wait_proxy_ready(&http, addr).await;
        let url = format!("http://{addr}/v1/update/");
        let post = |body: String| http.post(&url).body(body).send();

        if i == 0 {
            // Wrong requests, each named.
            let r = post("this is not xml <".into()).await.expect("post");
            assert_eq!(r.status(), 400);
            let t = r.text().await.expect("text");
            assert!(t.starts_with("malformed Omaha request: "), "{t}");
            let other = build_request(&AppRequest {
                appid: "{00000000-0000-0000-0000-000000000001}".into(),
                version: "1.0.0".into(),
                track: "stable".into(),
                machineid: known.clone(),
                bootid: "b".into(),
                updatecheck: true,
                events: vec![],
            });
            let r = post(other).await.expect("post");
            assert_eq!(r.status(), 400);
            assert_eq!(
                r.text().await.expect("text"),
                format!("the request has no Flatcar app (appid {FLATCAR_APP_ID})\n")
            );
            let r = post(request("", true)).await.expect("post");
            assert_eq!(r.status(), 400);
            assert_eq!(
                r.text().await.expect("text"),
                "the update check has no machineid; drydock maps machineid to a Node\n"
            );
            let r = post("x".repeat(70 * 1024)).await.expect("post");
            assert_eq!(r.status(), 413, "over 64 KiB");
            let r = http
                .post(&url)
                .body(vec![0xff, 0xfe])
                .send()
                .await
                .expect("post");
            assert_eq!(r.status(), 400);
            assert_eq!(
                r.text().await.expect("text"),
                "the request body is not UTF-8\n"
            );
            // A machine that is no Node hears noupdate.
            let r = post(request("ffffffffffffffffffffffffffffffff", true))
                .await
                .expect("post");
            assert_eq!(r.status(), 200);
            assert!(r.text().await.expect("text").contains(NOUPDATE));
            // An event report is acknowledged even when upstream is away.
            let r = post(request(&known, false)).await.expect("post");
            assert_eq!(r.status(), 200);
            let t = r.text().await.expect("text");
            assert!(t.contains("<event status=\"ok\"/>"), "{t}");
        }

        // A known node, a broken upstream: noupdate, and the metric says why.
        let r = post(request(&known, true)).await.expect("post");
        assert_eq!(r.status(), 200, "{what}");
        let t = r.text().await.expect("text");
        assert!(t.contains(NOUPDATE), "{what}: {t}");
        assert!(!t.contains("<urls>"), "no half-read offer: {t}");
        let text = metrics(&http, addr).await;
        assert_eq!(
            counter(
                &text,
                &format!("drydock_omaha_requests_total{{outcome=\"upstream-{what}\"}} ")
            ),
            1 + u64::from(i == 0),
            "{what}: {text}"
        );
        if i == 0 {
            assert_eq!(
                counter(
                    &text,
                    "drydock_omaha_requests_total{outcome=\"bad-request\"} "
                ),
                4,
                "{text}"
            );
            assert_eq!(
                counter(
                    &text,
                    "drydock_omaha_requests_total{outcome=\"withheld-unknown\"} "
                ),
                1,
                "{text}"
            );
        }
        op.abort();
    }
}
