//! Helpers shared by drydockctl's end-to-end tests.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root (the shipped examples, ignition/ and deploy/ live there).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the real binary from the repository root.
pub fn drydockctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drydockctl"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("drydockctl runs")
}
