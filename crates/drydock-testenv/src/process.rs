//! Child processes of the control plane: started with a parent-death signal so a killed
//! test binary leaves nothing behind, logged to files, stopped by PID on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::Error;

/// A started component.
pub struct Component {
    /// Short name (`etcd`, `kube-apiserver`, ...).
    pub name: String,
    /// Its log file.
    pub log: PathBuf,
    child: Child,
}

impl Component {
    /// Whether the process has exited, and how.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdin, once, when started with [`start_piped`].
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// Its stdout, once, when started with [`start_piped`].
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Stops the process (SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop();
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The parent-death signal is tied to the *thread* that forks. Tests run on short-lived
/// threads, so every child is forked by one thread that lives as long as the process.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| eprintln!("drydock-testenv: cannot start the spawner thread: {e}"));
        Mutex::new(tx)
    })
}

/// Starts `program args` with its output in `log_dir/name.log`, killed with SIGKILL
/// should this process die (via util-linux `setpriv --pdeathsig`).
pub fn start(
    name: &str,
    program: &Path,
    args: &[String],
    log_dir: &Path,
) -> Result<Component, Error> {
    start_with(name, program, args, log_dir, false)
}

/// [`start`], but with stdin and stdout as pipes to this process (see
/// [`Component::take_stdin`]); stderr goes to the log.
pub fn start_piped(
    name: &str,
    program: &Path,
    args: &[String],
    log_dir: &Path,
) -> Result<Component, Error> {
    start_with(name, program, args, log_dir, true)
}

fn start_with(
    name: &str,
    program: &Path,
    args: &[String],
    log_dir: &Path,
    piped: bool,
) -> Result<Component, Error> {
    let log = log_dir.join(format!("{name}.log"));
    let out =
        File::create(&log).map_err(|e| Error::Io(format!("creating {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| Error::Io(format!("opening {}", log.display()), e))?;
    let mut cmd = Command::new("setpriv");
    cmd.arg("--pdeathsig")
        .arg("KILL")
        .arg("--")
        .arg(program)
        .args(args)
        .stderr(err);
    if piped {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null()).stdout(out);
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| Error::Start(name.into(), "the spawner lock is poisoned".into()))?
        .send((cmd, tx))
        .map_err(|_| Error::Start(name.into(), "the spawner thread is gone".into()))?;
    let child = rx
        .recv()
        .map_err(|_| Error::Start(name.into(), "the spawner thread did not answer".into()))?
        .map_err(|e| {
            Error::Start(
                name.into(),
                format!(
                    "setpriv {}: {e} (setpriv comes with util-linux)",
                    program.display()
                ),
            )
        })?;
    Ok(Component {
        name: name.to_string(),
        log,
        child,
    })
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
