//! A private `dbus-daemon` for one test: the real bus daemon, on a socket in a temporary
//! directory, with the upstream bus policies of the services drydock talks to.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The upstream policy files the private bus includes, as shipped by the OS.
const POLICIES: [(&str, &str); 2] = [
    (
        "com.coreos.update1.conf",
        include_str!("../upstream/com.coreos.update1.conf"),
    ),
    (
        "org.projectatomic.rpmostree1.conf",
        include_str!("../upstream/org.projectatomic.rpmostree1.conf"),
    ),
];

/// Why the bus could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No `dbus-daemon` binary.
    #[error(
        "dbus-daemon is not installed ({0}); install it with `apt-get install dbus-daemon` (.ci/run does)"
    )]
    Missing(std::io::Error),
    /// Filesystem trouble.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The daemon did not print its address.
    #[error("dbus-daemon did not start: {0}")]
    NoAddress(String),
}

/// A running private bus; the daemon is killed when this drops.
pub struct PrivateBus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    /// Starts a bus whose policy is the system bus's for the drydock-relevant services
    /// (the upstream files) plus: anyone may own other names and talk to anyone.
    pub fn start() -> Result<PrivateBus, BusError> {
        let dir = tempfile::Builder::new()
            .prefix("drydock-bus-")
            .tempdir()
            .map_err(|e| BusError::Io("creating the bus directory".into(), e))?;
        let mut includes = String::new();
        for (name, text) in POLICIES {
            let path = dir.path().join(name);
            std::fs::write(&path, text)
                .map_err(|e| BusError::Io(format!("writing {}", path.display()), e))?;
            includes.push_str(&format!("  <include>{}</include>\n", path.display()));
        }
        let socket: PathBuf = dir.path().join("bus");
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
{includes}</busconfig>
"#,
            socket.display()
        );
        let config_path = dir.path().join("bus.conf");
        std::fs::write(&config_path, config)
            .map_err(|e| BusError::Io("writing bus.conf".into(), e))?;
        let log_path = dir.path().join("dbus-daemon.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| BusError::Io("creating the bus log".into(), e))?;
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .arg("--nofork")
            .arg("--nopidfile")
            .arg("--print-address=1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // The upstream policies name the Flatcar user `core`, unknown here: the daemon
            // says so on every start; keep that out of the test output.
            .stderr(log)
            .spawn()
            .map_err(BusError::Missing)?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BusError::NoAddress("no stdout".into()))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| BusError::NoAddress(e.to_string()))?;
        let address = line.trim().to_string();
        if address.is_empty() {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(BusError::NoAddress(format!(
                "exited ({status}) without an address: {}",
                log.trim()
            )));
        }
        Ok(PrivateBus {
            child,
            address,
            _dir: dir,
        })
    }

    /// The bus address (`unix:path=...`), for `zbus::connection::Builder::address`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A new connection to this bus.
    pub async fn connect(&self) -> zbus::Result<zbus::Connection> {
        zbus::connection::Builder::address(self.address.as_str())?
            .build()
            .await
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
