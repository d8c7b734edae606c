#!/usr/bin/env bash
# The fleet benchmarks (on demand, not in CI: the 5,000-node run alone takes about half an
# hour on 2 cores). Builds the control plane (or reuses it) and the release binaries, then
# runs `drydockctl bench`; arguments are passed on, e.g.
#   tests/bench.sh --nodes 100,1000,5000 --profile uniform,mixed --results docs/bench
# Results: a JSON file and a phase plot per run, summary.md and summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
DRYDOCK_CLUSTER_BIN=$(tests/cluster/build.sh | tail -n 1)
export DRYDOCK_CLUSTER_BIN
cargo build --release --bins
# The planner's own cost at 5,000 nodes, without the API server around it.
cargo bench -p drydock-core
exec target/release/drydockctl bench "$@"
