#!/usr/bin/env bash
# drydock's demo: builds the binaries and the local control plane (once, cached), then
# runs `drydockctl demo` with the arguments given (`--nodes N`, `--os fcos`, ...).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --bins --quiet
DRYDOCK_CLUSTER_BIN=$(tests/cluster/build.sh | tail -n 1)
export DRYDOCK_CLUSTER_BIN
exec target/debug/drydockctl demo "$@"
