//! drydockctl end to end: the real binary on the shipped examples and on bad input.

use std::io::Write;

mod common;
use common::drydockctl;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A temporary file holding `content`, removed when dropped.
fn temp_file(content: &str) -> TempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    f.write_all(content.as_bytes()).expect("write temp file");
    TempFile(f.into_temp_path())
}

struct TempFile(tempfile::TempPath);

impl TempFile {
    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

#[test]
fn config_check_accepts_the_example_and_exits_zero() {
    let out = drydockctl(&["config", "check", "examples/config.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "examples/config.yaml: valid (3 pool(s): control-plane, workers, default)\n"
    );
}

#[test]
fn config_check_prints_every_error_with_its_path_and_exits_one() {
    let f = temp_file(
        "maxUnavailable: 0\npools:\n  - name: w\n    nodeSelector: {a: b}\n    maxUnavailable: 150%\n    windows: [{days: [Sat], start: '1:00', length: 4h, timeZone: Nowhere/City}]\n",
    );
    let out = drydockctl(&["config", "check", f.arg()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(": 3 error(s)"), "{err}");
    assert!(
        err.contains("  maxUnavailable: 0 would never let a node update"),
        "{err}"
    );
    assert!(
        err.contains("  pools[0].maxUnavailable: 150% is over 100%"),
        "{err}"
    );
    assert!(err.contains("  pools[0].windows[0].timeZone: time zone \"Nowhere/City\" is not an IANA time zone name"), "{err}");
}

#[test]
fn config_check_reads_a_configmap_manifest() {
    let f = temp_file(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: drydock-config, namespace: drydock-system}\ndata:\n  config.yaml: |\n    canary: x\n",
    );
    let out = drydockctl(&["config", "check", f.arg()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("  data.config.yaml: canary: must be a whole number, not \"x\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn config_check_of_a_missing_file_exits_two() {
    let out = drydockctl(&["config", "check", "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("drydockctl: reading no/such/file.yaml: "),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plan_on_the_example_explains_every_node() {
    let out = drydockctl(&[
        "plan",
        "--cluster",
        "examples/cluster.json",
        "--config",
        "examples/config.yaml",
        "--now",
        "2026-11-28T01:30:00Z",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(
        t.contains("PDB shop/db has no disruption to spare (this node needs 1)"),
        "{t}"
    );
    assert!(t.contains("node is NotReady"), "{t}");
    assert!(
        t.contains("pool control-plane: at its limit of 1 unavailable node(s)"),
        "{t}"
    );
    // Outside the window nothing starts, and the table says when it opens.
    let out = drydockctl(&[
        "plan",
        "--cluster",
        "examples/cluster.json",
        "--config",
        "examples/config.yaml",
        "--now",
        "2026-11-25T12:00:00Z",
    ]);
    let t = text(&out.stdout);
    assert!(t.contains("No actions."), "{t}");
    assert!(t.contains("window opens Sat 01:00 Europe/Berlin"), "{t}");
}

#[test]
fn plan_json_has_the_documented_shape() {
    let out = drydockctl(&[
        "plan",
        "--cluster",
        "examples/cluster.json",
        "--config",
        "examples/config.yaml",
        "--now",
        "2026-11-28T01:30:00Z",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let actions = v["actions"].as_array().expect("actions");
    let waiting = v["waiting"].as_array().expect("waiting");
    assert_eq!(
        actions.len() + waiting.len(),
        12,
        "every node answered once"
    );
    for a in actions {
        assert!(
            a["node"].is_string() && a["action"].is_string() && a["reason"].is_string(),
            "{a}"
        );
    }
    for w in waiting {
        assert!(
            w["node"].is_string() && w["reason"].is_string() && w["message"].is_string(),
            "{w}"
        );
    }
    let drains = actions.iter().filter(|a| a["action"] == "drain").count();
    assert_eq!(
        drains, 3,
        "one control-plane node and two workers (3 of 3 with the NotReady one)"
    );
    let workers = v["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "workers"))
        .expect("workers pool");
    assert_eq!(workers["maxUnavailable"], 3);
}

#[test]
fn plan_with_a_bad_policy_exits_one_and_a_bad_dump_exits_two() {
    let bad = temp_file("maxUnavailable: lots\n");
    let out = drydockctl(&[
        "plan",
        "--cluster",
        "examples/cluster.json",
        "--config",
        bad.arg(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "maxUnavailable: must be a count like 2 or a percentage like 20%, not \"lots\""
        )
    );
    let dump = temp_file(
        "{\"kind\":\"List\",\"items\":[{\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"x\"}}]}",
    );
    let out = drydockctl(&["plan", "--cluster", dump.arg()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("items[0] (ConfigMap x): unexpected kind \"ConfigMap\""),
        "{}",
        text(&out.stderr)
    );
}
