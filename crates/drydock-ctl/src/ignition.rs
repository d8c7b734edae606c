//! Ignition configs for drydock-managed workers: what a node needs on first boot so that
//! drydock, not the OS's own reboot manager, decides when it reboots.
//!
//! - Flatcar: locksmithd masked (drydock grants reboots instead), `update.conf` with
//!   `GROUP` (the channel) and optionally `SERVER` (drydock's Omaha endpoint), and a
//!   kubelet join placeholder to fill in.
//! - Fedora CoreOS: a Zincati drop-in. By default it turns Zincati's updates off, since
//!   the drydock agent stages and applies them; with `--server` (the drydock operator's
//!   URL) it instead points Zincati's update graph and its `fleet_lock` strategy there,
//!   for fleets that keep Zincati.
//!
//! Files are embedded as `data:` URLs with a `sha512-` verification hash of their bytes
//! (no compression, so the hash is that of the file as written); modes are decimal, as
//! Ignition's JSON wants them. The Butane sources in `ignition/` say the same thing.

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha512};

/// The OS a config is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Os {
    /// Flatcar Container Linux.
    Flatcar,
    /// Fedora CoreOS (the drydock agent updates; Zincati off, or on FleetLock).
    Fcos,
}

/// The Ignition spec versions rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Spec {
    /// 3.3.0: Flatcar since 3185, Fedora CoreOS since 35, Debian's ignition-validate.
    #[value(name = "3.3.0")]
    V3_3,
    /// 3.4.0: Flatcar since 3913, Fedora CoreOS since 39.
    #[value(name = "3.4.0")]
    V3_4,
    /// 3.5.0: Fedora CoreOS since 41.
    #[value(name = "3.5.0")]
    V3_5,
}

impl Spec {
    /// The `ignition.version` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Spec::V3_3 => "3.3.0",
            Spec::V3_4 => "3.4.0",
            Spec::V3_5 => "3.5.0",
        }
    }
}

/// What to render.
#[derive(Debug, Clone)]
pub struct Options {
    /// Target OS.
    pub os: Os,
    /// Flatcar channel (`GROUP`): alpha, beta, stable, lts or a Nebraska group.
    pub channel: Option<String>,
    /// Flatcar: drydock's Omaha endpoint (`SERVER`); FCOS: a FleetLock base URL for
    /// Zincati (without it Zincati's updates are off and the agent updates).
    pub server: Option<String>,
    /// Ignition spec version.
    pub spec: Spec,
}

/// Why a config cannot be rendered; each names the flag at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// `--channel` is not a valid group name.
    #[error(
        "--channel {0:?}: a channel is 1-64 letters, digits, '-', '_' or '.' (like stable or lts-2024)"
    )]
    BadChannel(String),
    /// `--server` is not an http(s) URL that can be written safely.
    #[error("--server {0:?}: {1}")]
    BadServer(String, &'static str),
    /// Fedora CoreOS streams are not set by Ignition.
    #[error(
        "--channel does not apply to --os fcos: a node's stream comes from its image; set the pool's channel in drydock-config instead"
    )]
    FcosChannel,
}

/// Path of Flatcar's update configuration.
pub const UPDATE_CONF: &str = "/etc/flatcar/update.conf";
/// Path of the Zincati drop-in.
pub const ZINCATI_DROPIN: &str = "/etc/zincati/config.d/55-drydock.toml";
/// Path of the kubelet join placeholder script.
pub const JOIN_SCRIPT: &str = "/etc/kubernetes/join.sh";

/// A `data:` URL holding `bytes` (base64, no media type).
pub fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Ignition's verification hash of `bytes`: `sha512-` and the lowercase hex digest.
pub fn sha512_hash(bytes: &[u8]) -> String {
    let digest = Sha512::digest(bytes);
    let mut s = String::with_capacity(7 + 128);
    s.push_str("sha512-");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn file(path: &str, mode: u32, contents: &str) -> Value {
    json!({
        "path": path,
        "mode": mode,
        "overwrite": true,
        "contents": {
            "source": data_url(contents.as_bytes()),
            "verification": {"hash": sha512_hash(contents.as_bytes())},
        },
    })
}

fn check_channel(channel: &str) -> Result<(), RenderError> {
    let ok = !channel.is_empty()
        && channel.len() <= 64
        && channel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RenderError::BadChannel(channel.to_string()))
    }
}

fn check_server(server: &str) -> Result<(), RenderError> {
    let bad = |why| Err(RenderError::BadServer(server.to_string(), why));
    let Some(rest) = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
    else {
        return bad("must start with http:// or https://");
    };
    if rest.is_empty() || rest.starts_with('/') {
        return bad("has no host");
    }
    // It is written into update.conf (one KEY=value line) and a TOML string.
    if server
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '"' || c == '\\')
    {
        return bad("must not contain spaces, quotes, backslashes or control characters");
    }
    Ok(())
}

/// `/etc/flatcar/update.conf` for `channel` and an optional Omaha `server`.
pub fn update_conf(channel: &str, server: Option<&str>) -> String {
    let mut s = String::from(
        "# Written by `drydockctl ignition render`. GROUP is the channel update_engine follows;\n\
         # the drydock agent rewrites it when the pool's channel in drydock-config changes.\n",
    );
    s.push_str(&format!("GROUP={channel}\n"));
    if let Some(server) = server {
        s.push_str("# update_engine asks drydock's Omaha endpoint, which holds back what a pool's pin forbids.\n");
        s.push_str(&format!("SERVER={server}\n"));
    }
    s
}

/// The Zincati drop-in that points Zincati at the drydock operator for both its update
/// graph (so it stages only what the pool's pin and the rollout allow) and its reboot lock
/// (FleetLock).
pub fn zincati_dropin(server: &str) -> String {
    format!(
        "# Written by `drydockctl ignition render`. Zincati asks drydock which release to\n\
         # stage (GET /v1/graph, pinned per pool), asks before every reboot\n\
         # (POST /v1/pre-reboot) and reports back after it (POST /v1/steady-state).\n\
         [cincinnati]\n\
         base_url = \"{server}\"\n\
         \n\
         [updates]\n\
         strategy = \"fleet_lock\"\n\
         \n\
         [updates.fleet_lock]\n\
         base_url = \"{server}\"\n"
    )
}

/// The Zincati drop-in that turns Zincati's updates off: the drydock agent checks,
/// stages (locked) and finalizes on a grant, and two updaters would fight over the staged
/// deployment.
pub const ZINCATI_OFF: &str = "# Written by `drydockctl ignition render`. The drydock agent stages updates and\n\
# reboots into them when drydock grants it; Zincati must not stage its own.\n\
[updates]\n\
enabled = false\n";

/// The kubelet join placeholder: fails loudly until someone puts a real join in it.
pub const JOIN_SCRIPT_BODY: &str = "#!/bin/sh\n\
# Placeholder: replace with this cluster's join command, for example\n\
#   kubeadm join --config /etc/kubernetes/join.yaml\n\
echo \"kubelet-join: /etc/kubernetes/join.sh is still the placeholder from drydockctl\" >&2\n\
exit 1\n";

/// The unit that runs the join once, before the node has a kubelet configuration.
pub const JOIN_UNIT: &str = "[Unit]\n\
Description=Join this node to the Kubernetes cluster (edit /etc/kubernetes/join.sh)\n\
Wants=network-online.target\n\
After=network-online.target\n\
ConditionPathExists=!/etc/kubernetes/kubelet.conf\n\
\n\
[Service]\n\
Type=oneshot\n\
RemainAfterExit=yes\n\
ExecStart=/etc/kubernetes/join.sh\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n";

/// Renders the Ignition config, or says which flag is wrong.
pub fn render(opts: &Options) -> Result<Value, RenderError> {
    if let Some(c) = &opts.channel {
        check_channel(c)?;
    }
    if let Some(s) = &opts.server {
        check_server(s)?;
    }
    let (files, units) = match opts.os {
        Os::Flatcar => {
            let channel = opts.channel.as_deref().unwrap_or("stable");
            (
                vec![
                    file(
                        UPDATE_CONF,
                        0o644,
                        &update_conf(channel, opts.server.as_deref()),
                    ),
                    file(JOIN_SCRIPT, 0o700, JOIN_SCRIPT_BODY),
                ],
                vec![
                    // drydock grants reboots; locksmithd would reboot on its own.
                    json!({"name": "locksmithd.service", "mask": true}),
                    json!({"name": "kubelet-join.service", "enabled": true, "contents": JOIN_UNIT}),
                ],
            )
        }
        Os::Fcos => {
            if opts.channel.is_some() {
                return Err(RenderError::FcosChannel);
            }
            let dropin = match opts.server.as_deref() {
                Some(server) => zincati_dropin(server),
                None => ZINCATI_OFF.to_string(),
            };
            (vec![file(ZINCATI_DROPIN, 0o644, &dropin)], vec![])
        }
    };
    let mut config = json!({
        "ignition": {"version": opts.spec.as_str()},
        "storage": {"files": files},
    });
    if !units.is_empty() {
        config["systemd"] = json!({"units": units});
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(os: Os, channel: Option<&str>, server: Option<&str>) -> Options {
        Options {
            os,
            channel: channel.map(String::from),
            server: server.map(String::from),
            spec: Spec::V3_4,
        }
    }

    #[test]
    fn hashes_are_sha512_of_the_bytes() {
        // sha512("") from FIPS 180-4 test vectors.
        assert_eq!(
            sha512_hash(b""),
            "sha512-cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
        assert_eq!(data_url(b"GROUP=beta\n"), "data:;base64,R1JPVVA9YmV0YQo=");
    }

    #[test]
    fn flatcar_gets_group_and_server() {
        let c = render(&opts(
            Os::Flatcar,
            Some("beta"),
            Some("http://10.0.0.10:30080/v1/update/"),
        ))
        .expect("render");
        assert_eq!(c["ignition"]["version"], "3.4.0");
        assert_eq!(c["storage"]["files"][0]["path"], UPDATE_CONF);
        assert_eq!(c["storage"]["files"][0]["mode"], 420);
        assert_eq!(c["storage"]["files"][1]["mode"], 448);
        let conf = update_conf("beta", Some("http://10.0.0.10:30080/v1/update/"));
        assert!(
            conf.contains("\nGROUP=beta\n")
                && conf.ends_with("SERVER=http://10.0.0.10:30080/v1/update/\n")
        );
        assert_eq!(
            c["storage"]["files"][0]["contents"]["source"],
            data_url(conf.as_bytes())
        );
        assert_eq!(c["systemd"]["units"][0]["name"], "locksmithd.service");
        assert_eq!(c["systemd"]["units"][0]["mask"], true);
        // No SERVER line without --server; stable by default.
        assert!(!update_conf("stable", None).contains("SERVER"));
        let d = render(&opts(Os::Flatcar, None, None)).expect("render");
        assert_eq!(
            d["storage"]["files"][0]["contents"]["source"],
            data_url(update_conf("stable", None).as_bytes())
        );
    }

    #[test]
    fn fcos_gets_the_fleetlock_dropin() {
        let c =
            render(&opts(Os::Fcos, None, Some("https://fleetlock.example.com"))).expect("render");
        assert_eq!(c["storage"]["files"][0]["path"], ZINCATI_DROPIN);
        let dropin = zincati_dropin("https://fleetlock.example.com");
        assert!(dropin.contains("strategy = \"fleet_lock\""));
        assert_eq!(
            dropin
                .matches("base_url = \"https://fleetlock.example.com\"")
                .count(),
            2,
            "both the graph and the lock: {dropin}"
        );
        assert!(dropin.contains("[cincinnati]"));
        assert!(c.get("systemd").is_none());
    }

    #[test]
    fn bad_flags_are_named() {
        let e = |o: Options| render(&o).expect_err("must fail");
        assert_eq!(
            e(opts(Os::Flatcar, Some("stable\nSERVER=evil"), None)),
            RenderError::BadChannel("stable\nSERVER=evil".into())
        );
        assert!(matches!(
            e(opts(Os::Flatcar, None, Some("ftp://x"))),
            RenderError::BadServer(_, "must start with http:// or https://")
        ));
        assert!(matches!(
            e(opts(Os::Flatcar, None, Some("http://x\nGROUP=alpha"))),
            RenderError::BadServer(..)
        ));
        assert!(matches!(
            e(opts(Os::Fcos, None, Some("http://x\" evil"))),
            RenderError::BadServer(..)
        ));
        assert!(matches!(
            e(opts(Os::Fcos, None, Some("https:///path"))),
            RenderError::BadServer(_, "has no host")
        ));
        let off = render(&opts(Os::Fcos, None, None)).expect("render");
        assert_eq!(off["storage"]["files"][0]["path"], ZINCATI_DROPIN);
        assert_eq!(
            off["storage"]["files"][0]["contents"]["source"],
            data_url(ZINCATI_OFF.as_bytes())
        );
        assert!(ZINCATI_OFF.contains("[updates]\nenabled = false\n"));
        assert_eq!(
            e(opts(Os::Fcos, Some("next"), Some("http://x"))),
            RenderError::FcosChannel
        );
    }
}
