#!/usr/bin/env bash
# The fleet benchmarks (on demand, not in CI: the 5,000-node run alone takes about half an
# hour on 2 cores). Builds the control plane (or reuses it) and the release binaries, then
# runs `drydockctl bench`; arguments are passed on, e.g.
#   tests/bench.sh --nodes 100,1000,5000 --profile uniform,mixed --results docs/bench
# Results: a JSON file and a phase plot per run, summary.md and summary.json.
#
# The operator and the agent measured are the container images' builds: static, with
# musl's allocator, whose resident memory differs from a glibc build's. They come from
# images/static-bins.sh, the script images/build.sh builds the images' binaries with.
# The simulated fleet (drydock-sim) runs from the release build. Pass --bin-dir DIR to
# measure other builds (DIR holding drydock-operator, drydock-agent and drydock-sim).
set -euo pipefail
cd "$(dirname "$0")/.."
DRYDOCK_CLUSTER_BIN=$(tests/cluster/build.sh | tail -n 1)
export DRYDOCK_CLUSTER_BIN
cargo build --release --bins
# The planner's own cost at 5,000 nodes, without the API server around it.
cargo bench -p drydock-core

bin_dir=()
if [[ " $* " != *" --bin-dir "* && " $* " != *" --bin-dir="* ]]; then
  # The images' builds (images/static-bins.sh), beside the release drydock-sim.
  static=$(images/static-bins.sh | tail -n 1)
  out=${CARGO_TARGET_DIR:-target}
  mkdir -p "$out/bench-bin"
  cp -f "$static/drydock-operator" "$static/drydock-agent" "$out/release/drydock-sim" "$out/bench-bin/"
  bin_dir=(--bin-dir "$out/bench-bin")
fi
exec "${CARGO_TARGET_DIR:-target}/release/drydockctl" bench "${bin_dir[@]}" "$@"
