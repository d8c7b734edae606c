//! `drydock-sim`: the host services drydock cannot run here, on a real bus.
//!
//! ```text
//! drydock-sim host --bus ADDRESS --os flatcar --version V --root DIR [--omaha URL] [--machine-id ID] [--check-ms MS]
//! drydock-sim host --bus ADDRESS --os fcos --version V --root DIR [--stream S] [--remote STREAM=VERSION ...]
//! drydock-sim omaha --listen ADDR --release CHANNEL=VERSION ...
//! ```
//!
//! `host` prints one JSON line per boot on stdout (`{"boot":2,"slot":"b","version":"…",
//! "rolled_back":false}`) and one as each power-off begins (`{"shutdown":1}`): whoever runs
//! the node's agent stops it at a shutdown line and starts it at a boot line, as a real
//! reboot would. With `--check-ms`, a Flatcar host's update_engine
//! checks its Omaha server on that period by itself, as the real one does (hourly). A
//! Fedora CoreOS host reads `publish STREAM VERSION` lines on stdin: the remote publishes
//! that release while the host runs. `omaha` prints its update URL, then serves until
//! Ctrl-C; `PUT /admin/releases/{channel}` changes the offered version while it runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use drydock_sim::host::{FcosOptions, FlatcarOptions, SimHost, fcos_ref};
use drydock_sim::omaha::OmahaServer;

#[derive(Parser, Debug)]
#[command(
    name = "drydock-sim",
    version,
    about = "Simulated host services for drydock's tests and demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Os {
    /// Flatcar Container Linux (update_engine + logind).
    Flatcar,
    /// Fedora CoreOS (rpm-ostree + logind).
    Fcos,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a simulated host's update service and logind on a bus.
    Host {
        /// D-Bus address to serve on (`unix:path=…`).
        #[arg(long)]
        bus: String,
        /// OS family.
        #[arg(long, value_enum)]
        os: Os,
        /// Version booted first.
        #[arg(long)]
        version: String,
        /// Where the host's files live.
        #[arg(long)]
        root: PathBuf,
        /// Flatcar: Omaha server for update checks (written as SERVER in update.conf).
        #[arg(long)]
        omaha: Option<String>,
        /// Fedora CoreOS: the stream the booted deployment follows.
        #[arg(long, default_value = "stable")]
        stream: String,
        /// Fedora CoreOS: `STREAM=VERSION` published on the remote after the booted
        /// version (repeatable, in order: the last one of a stream is its head).
        #[arg(long = "remote", value_parser = parse_release)]
        remote: Vec<(String, String)>,
        /// /etc/machine-id (32 hex digits).
        #[arg(long, default_value = "0123456789abcdef0123456789abcdef")]
        machine_id: String,
        /// Milliseconds per update_engine (or rpm-ostree transaction) step.
        #[arg(long, default_value_t = 200)]
        step_ms: u64,
        /// Milliseconds a reboot keeps the host down.
        #[arg(long, default_value_t = 2000)]
        reboot_ms: u64,
        /// Flatcar: update_engine's own periodic check, every this many milliseconds
        /// (0: only when asked over D-Bus).
        #[arg(long, default_value_t = 0)]
        check_ms: u64,
    },
    /// A fake upstream Omaha server.
    Omaha {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// `CHANNEL=VERSION`, repeatable.
        #[arg(long = "release", value_parser = parse_release)]
        releases: Vec<(String, String)>,
    },
}

/// update_engine's own scheduler: a check every `every` (what `AttemptUpdate` starts;
/// ignored while one runs or the host is down).
async fn periodic_checks(bus: String, every: Duration) {
    let mut conn: Option<zbus::Connection> = None;
    loop {
        tokio::time::sleep(every).await;
        if conn.is_none() {
            conn = match zbus::connection::Builder::address(bus.as_str()) {
                Ok(b) => b.build().await.ok(),
                Err(_) => None,
            };
        }
        if let Some(c) = &conn {
            let _ = c
                .call_method(
                    Some("com.coreos.update1"),
                    "/com/coreos/update1",
                    Some("com.coreos.update1.Manager"),
                    "AttemptUpdate",
                    &(),
                )
                .await;
        }
    }
}

/// Publishes each `publish STREAM VERSION` line of stdin on the host's remote; other
/// lines are reported on stderr and ignored.
async fn publish_from_stdin(ostree: drydock_sim::rpm_ostree::RpmOstree) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["publish", stream, version] => {
                match drydock_core::version::CoreOsVersion::parse(version) {
                    Ok(_) => ostree.publish(&fcos_ref(stream), version),
                    Err(e) => eprintln!("drydock-sim: publish {stream} {version:?}: {e}"),
                }
            }
            [] => {}
            _ => eprintln!("drydock-sim: stdin: {line:?} is not `publish STREAM VERSION`"),
        }
    }
}

fn parse_release(s: &str) -> Result<(String, String), String> {
    let (c, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not CHANNEL=VERSION"))?;
    if c.is_empty() || v.is_empty() {
        return Err(format!("{s:?} is not CHANNEL=VERSION"));
    }
    Ok((c.to_string(), v.to_string()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result: Result<(), String> = async {
        match cli.command {
            Command::Host { bus, os, version, root, omaha, stream, remote, machine_id, step_ms, reboot_ms, check_ms } => {
                std::fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
                let step = Duration::from_millis(step_ms);
                let reboot_delay = Duration::from_millis(reboot_ms);
                let host = match os {
                    Os::Flatcar => {
                        if !remote.is_empty() {
                            return Err("--remote is for --os fcos; Flatcar updates come from --omaha".into());
                        }
                        let options = FlatcarOptions { version, step, reboot_delay, omaha, machine_id };
                        let host = SimHost::start(&bus, &root, options).await.map_err(|e| e.to_string())?;
                        if check_ms > 0 {
                            tokio::spawn(periodic_checks(bus.clone(), Duration::from_millis(check_ms)));
                        }
                        host
                    }
                    Os::Fcos => {
                        if omaha.is_some() {
                            return Err("--omaha is for --os flatcar; Fedora CoreOS updates come from --remote".into());
                        }
                        drydock_core::version::CoreOsVersion::parse(&version)
                            .map_err(|e| format!("--version {version:?}: {e}"))?;
                        for (s, v) in &remote {
                            drydock_core::version::CoreOsVersion::parse(v)
                                .map_err(|e| format!("--remote {s}={v}: {e}"))?;
                        }
                        let options = FcosOptions { version, stream, step, reboot_delay, machine_id };
                        if check_ms > 0 {
                            return Err("--check-ms is for --os flatcar; on Fedora CoreOS the agent checks".into());
                        }
                        let host = SimHost::start_fcos(&bus, &root, options).await.map_err(|e| e.to_string())?;
                        if let Some(o) = host.ostree() {
                            for (s, v) in &remote {
                                o.publish(&fcos_ref(s), v);
                            }
                            tokio::spawn(publish_from_stdin(o.clone()));
                        }
                        host
                    }
                };
                let mut boots = host.reboots();
                let mut downs = host.shutdowns();
                let b = boots.borrow_and_update().clone();
                println!("{}", serde_json::json!({"boot": b.number, "slot": b.slot, "version": b.version, "rolled_back": b.rolled_back}));
                loop {
                    tokio::select! {
                        changed = boots.changed() => {
                            if changed.is_err() { return Ok(()) }
                            let b = boots.borrow_and_update().clone();
                            println!("{}", serde_json::json!({"boot": b.number, "slot": b.slot, "version": b.version, "rolled_back": b.rolled_back}));
                        }
                        changed = downs.changed() => {
                            if changed.is_err() { return Ok(()) }
                            let n = *downs.borrow_and_update();
                            println!("{}", serde_json::json!({"shutdown": n}));
                        }
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                    }
                }
            }
            Command::Omaha { listen, releases } => {
                let releases: BTreeMap<String, String> = releases.into_iter().collect();
                let server = OmahaServer::start(listen, releases).await.map_err(|e| format!("listening on {listen}: {e}"))?;
                println!("{}", server.url());
                tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drydock-sim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
