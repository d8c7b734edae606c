//! `drydock-testenv`: the test control plane, by hand. Brings it up with N kwok nodes,
//! prints the kubeconfig path, and stays in the foreground until Ctrl-C, which stops
//! every component.

use std::time::Duration;

use anyhow::Context;

fn usage() -> ! {
    eprintln!(
        "usage: drydock-testenv [--nodes N]   (needs {}; tests/cluster/build.sh prints it)",
        drydock_testenv::BIN_ENV
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut nodes = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" => {
                nodes = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--version" => {
                println!("drydock-testenv {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            _ => usage(),
        }
    }
    let mut env = drydock_testenv::TestEnv::start()
        .await
        .context("starting the control plane")?;
    eprintln!("control plane up in {:.1}s", env.startup.as_secs_f64());
    if nodes > 0 {
        let t = std::time::Instant::now();
        env.add_ready_nodes(
            "kwok-node",
            nodes,
            &[("node-role.kubernetes.io/worker", "")],
            Duration::from_secs(120),
        )
        .await
        .context("adding nodes")?;
        eprintln!("{nodes} node(s) Ready in {:.1}s", t.elapsed().as_secs_f64());
    }
    println!("{}", env.kubeconfig().display());
    eprintln!(
        "export KUBECONFIG={}   # logs in {}; Ctrl-C stops everything",
        env.kubeconfig().display(),
        env.log_dir().display()
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("stopping");
    drop(env);
    Ok(())
}
