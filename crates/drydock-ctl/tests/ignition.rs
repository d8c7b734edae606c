//! `drydockctl ignition render` end to end: every OS × spec × option combination is
//! validated against Ignition's own JSON schemas (copies in tests/data), checked for keys
//! the schema does not know, and checked semantically (unit and drop-in suffixes, unique
//! paths, decimal modes, every data-URL hash recomputed). Spec 3.3.0 configs also pass
//! Debian's `ignition-validate`. The configs and Butane sources shipped in `ignition/`
//! must match what the command renders.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha512};

mod common;
use common::{drydockctl, root};

fn render(args: &[&str]) -> Value {
    let mut all = vec!["ignition", "render"];
    all.extend_from_slice(args);
    let out = drydockctl(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the output is JSON")
}

fn schema(spec: &str) -> Value {
    let file = format!("ignition-v{}.schema.json", &spec[..3].replace('.', "_"));
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("schema")).expect("schema JSON")
}

/// Validates with a real JSON Schema (draft 4) implementation.
fn schema_errors(spec: &str, config: &Value) -> Option<String> {
    let mut compiler = boon::Compiler::new();
    let mut schemas = boon::Schemas::new();
    let loc = format!("https://drydock.test/ignition-{spec}.json");
    compiler
        .add_resource(&loc, schema(spec))
        .expect("schema resource");
    let idx = compiler
        .compile(&loc, &mut schemas)
        .expect("schema compiles");
    schemas
        .validate(config, idx)
        .err()
        .map(|e| format!("{e:#}"))
}

/// Resolves `$ref` (local) and merges `allOf` into one object schema.
fn resolve<'a>(root: &'a Value, s: &'a Value) -> Vec<&'a Value> {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let mut node = root;
        for part in r.trim_start_matches("#/").split('/') {
            node = &node[part];
        }
        return resolve(root, node);
    }
    let mut out = vec![s];
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for a in all {
            out.extend(resolve(root, a));
        }
    }
    out
}

/// The schemas allow unknown keys (no additionalProperties); a typo would pass them and be
/// ignored by Ignition. This walk rejects every key the schema does not define.
fn unknown_keys(root: &Value, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    let parts = resolve(root, schema);
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let sub = parts.iter().find_map(|p| p.get("properties")?.get(k));
                match sub {
                    Some(sub) => unknown_keys(root, sub, child, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k}")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = parts.iter().find_map(|p| p.get("items")) {
                for (i, child) in items.iter().enumerate() {
                    unknown_keys(root, sub, child, &format!("{at}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

const UNIT_SUFFIXES: [&str; 11] = [
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

/// Decodes a `data:` URL (base64 or percent-encoded).
fn decode_data_url(url: &str) -> Vec<u8> {
    let rest = url.strip_prefix("data:").expect("a data URL");
    let (meta, payload) = rest.split_once(',').expect("a data URL has a comma");
    if meta.ends_with(";base64") {
        base64::engine::general_purpose::STANDARD
            .decode(payload)
            .expect("valid base64")
    } else {
        let mut out = Vec::new();
        let b = payload.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("escape");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }
}

fn sha512_hex(bytes: &[u8]) -> String {
    Sha512::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Semantic checks Ignition itself makes at boot, or that a careful reviewer would.
fn semantic_errors(config: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let mut paths = BTreeSet::new();
    for kind in ["files", "directories", "links"] {
        for f in config["storage"][kind].as_array().into_iter().flatten() {
            let path = f["path"].as_str().unwrap_or_default();
            if !path.starts_with('/') {
                errors.push(format!("{kind}: {path:?} is not absolute"));
            }
            if !paths.insert(path.to_string()) {
                errors.push(format!("{kind}: {path} appears twice"));
            }
            if let Some(mode) = f.get("mode") {
                match mode.as_u64() {
                    Some(m) if m <= 0o7777 => {}
                    _ => errors.push(format!("{path}: mode {mode} is not a decimal 0..=4095")),
                }
            }
            let contents = &f["contents"];
            if let Some(source) = contents["source"].as_str() {
                if !source.starts_with("data:") {
                    errors.push(format!("{path}: fetches {source} at boot"));
                    continue;
                }
                if contents["compression"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
                {
                    errors.push(format!(
                        "{path}: compressed; hash would not be recomputable"
                    ));
                }
                let bytes = decode_data_url(source);
                let want = format!("sha512-{}", sha512_hex(&bytes));
                match contents["verification"]["hash"].as_str() {
                    Some(h) if h == want => {}
                    other => errors.push(format!("{path}: hash {other:?}, contents hash {want}")),
                }
            }
        }
    }
    let mut units = BTreeSet::new();
    for u in config["systemd"]["units"].as_array().into_iter().flatten() {
        let name = u["name"].as_str().unwrap_or_default();
        if !UNIT_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            errors.push(format!("unit {name:?} has no unit-type suffix"));
        }
        if !units.insert(name.to_string()) {
            errors.push(format!("unit {name} appears twice"));
        }
        if u["mask"] == json!(true) && (u["enabled"] == json!(true) || u.get("contents").is_some())
        {
            errors.push(format!(
                "unit {name} is masked and also enabled or given contents"
            ));
        }
        if u["enabled"] == json!(true)
            && !u["contents"]
                .as_str()
                .is_some_and(|c| c.contains("[Install]"))
        {
            errors.push(format!(
                "unit {name} is enabled but has no [Install] section"
            ));
        }
        for d in u["dropins"].as_array().into_iter().flatten() {
            let dn = d["name"].as_str().unwrap_or_default();
            if !dn.ends_with(".conf") {
                errors.push(format!("drop-in {dn:?} of {name} does not end in .conf"));
            }
        }
    }
    errors
}

fn ignition_validate(config: &Value) -> Output {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), serde_json::to_vec(config).expect("json")).expect("write");
    Command::new("ignition-validate")
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("ignition-validate could not run ({e}); install Debian's `ignition` package (.ci/run does)")
        })
}

fn cases() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("flatcar", vec!["--os", "flatcar"]),
        (
            "flatcar",
            vec![
                "--os",
                "flatcar",
                "--channel",
                "beta",
                "--server",
                "https://drydock.example.com:8443/v1/update/",
            ],
        ),
        ("fcos", vec!["--os", "fcos"]),
        (
            "fcos-fleetlock",
            vec!["--os", "fcos", "--server", "http://10.0.0.10:30080"],
        ),
    ]
}

#[test]
fn every_rendered_config_is_valid_for_its_spec() {
    for spec in ["3.3.0", "3.4.0", "3.5.0"] {
        for (os, args) in cases() {
            let mut args = args.clone();
            args.extend(["--spec", spec]);
            let config = render(&args);
            assert_eq!(config["ignition"]["version"], spec);
            if let Some(e) = schema_errors(spec, &config) {
                panic!("{os} {spec} {args:?} fails the schema: {e}");
            }
            let root = schema(spec);
            let mut unknown = Vec::new();
            unknown_keys(&root, &root, &config, "$", &mut unknown);
            assert!(
                unknown.is_empty(),
                "{args:?}: keys the schema does not define: {unknown:?}"
            );
            let errors = semantic_errors(&config);
            assert!(errors.is_empty(), "{args:?}: {errors:#?}");
            if spec == "3.3.0" {
                let out = ignition_validate(&config);
                assert!(
                    out.status.success(),
                    "ignition-validate rejects {args:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

#[test]
fn the_checks_catch_broken_configs() {
    let good = render(&["--os", "flatcar", "--spec", "3.3.0"]);
    // A mode as a string: the schema and ignition-validate both refuse it.
    let mut bad = good.clone();
    bad["storage"]["files"][0]["mode"] = json!("0644");
    assert!(schema_errors("3.3.0", &bad).is_some());
    assert!(!ignition_validate(&bad).status.success());
    // A typo'd key passes the schema but not the unknown-key walk.
    let mut typo = good.clone();
    typo["storage"]["file"] = json!([]);
    assert!(schema_errors("3.3.0", &typo).is_none());
    let root = schema("3.3.0");
    let mut unknown = Vec::new();
    unknown_keys(&root, &root, &typo, "$", &mut unknown);
    assert_eq!(unknown, vec!["$.storage.file"]);
    // A changed byte breaks the hash; a duplicate path and a bad unit name are caught.
    let mut tampered = good.clone();
    let src = tampered["storage"]["files"][0]["contents"]["source"]
        .as_str()
        .expect("source")
        .to_string();
    let mut bytes = decode_data_url(&src);
    bytes[0] ^= 1;
    tampered["storage"]["files"][0]["contents"]["source"] = json!(format!(
        "data:;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    ));
    tampered["storage"]["files"][1]["path"] = good["storage"]["files"][0]["path"].clone();
    tampered["systemd"]["units"][0]["name"] = json!("locksmithd");
    let errors = semantic_errors(&tampered);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(!ignition_validate(&tampered).status.success());
}

#[test]
fn the_shipped_configs_are_what_the_command_renders() {
    for (name, args) in [
        ("flatcar-worker", vec!["--os", "flatcar"]),
        ("fcos-worker", vec!["--os", "fcos"]),
    ] {
        let shipped = std::fs::read_to_string(root().join(format!("ignition/{name}.ign")))
            .expect("shipped .ign");
        let mut all = vec!["ignition", "render"];
        all.extend_from_slice(&args);
        let out = drydockctl(&all);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            shipped,
            "ignition/{name}.ign is stale: regenerate it with drydockctl ignition render {}",
            args.join(" ")
        );

        // The Butane source says the same: the same files (mode, contents) and units.
        let ign: Value = serde_json::from_str(&shipped).expect("json");
        let bu: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(root().join(format!("ignition/{name}.bu"))).expect(".bu"),
        )
        .expect("Butane YAML");
        let files = bu["storage"]["files"].as_sequence().expect("files");
        let ign_files = ign["storage"]["files"].as_array().expect("files");
        assert_eq!(files.len(), ign_files.len(), "{name}: file count");
        for (b, i) in files.iter().zip(ign_files) {
            assert_eq!(b["path"].as_str(), i["path"].as_str(), "{name}");
            assert_eq!(b["mode"].as_u64(), i["mode"].as_u64(), "{name} mode");
            let inline = b["contents"]["inline"].as_str().expect("inline");
            let decoded = decode_data_url(i["contents"]["source"].as_str().expect("source"));
            assert_eq!(inline.as_bytes(), decoded.as_slice(), "{name}: contents");
        }
        let units = bu["systemd"]["units"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        let ign_units = ign["systemd"]["units"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(units.len(), ign_units.len(), "{name}: unit count");
        for (b, i) in units.iter().zip(&ign_units) {
            assert_eq!(b["name"].as_str(), i["name"].as_str());
            assert_eq!(b["mask"].as_bool(), i["mask"].as_bool());
            assert_eq!(b["enabled"].as_bool(), i["enabled"].as_bool());
            assert_eq!(b["contents"].as_str(), i["contents"].as_str());
        }
        let variant = bu["variant"].as_str().expect("variant");
        assert_eq!(
            variant,
            if name.starts_with("flatcar") {
                "flatcar"
            } else {
                "fcos"
            }
        );
    }
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    for (args, says) in [
        (
            vec!["--os", "flatcar", "--channel", "stable\nSERVER=x"],
            "--channel \"stable\\nSERVER=x\"",
        ),
        (
            vec!["--os", "flatcar", "--server", "ftp://x"],
            "must start with http:// or https://",
        ),
        (
            vec!["--os", "fcos", "--channel", "next", "--server", "http://x"],
            "--channel does not apply to --os fcos",
        ),
        (
            vec!["--os", "flatcar", "--spec", "3.2.0"],
            "invalid value '3.2.0'",
        ),
    ] {
        let mut all = vec!["ignition", "render"];
        all.extend_from_slice(&args);
        let out = drydockctl(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} wrote a config");
    }
}
