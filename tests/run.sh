#!/usr/bin/env bash
# The whole test suite: builds (or reuses) the local control plane, then runs every
# crate's tests. This is the command README.md gives and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real control plane (kube-apiserver, controller-manager, scheduler, etcd, kwok),
# built once from Go modules into a cache outside target/.
DRYDOCK_CLUSTER_BIN=$(tests/cluster/build.sh | tail -n 1)
export DRYDOCK_CLUSTER_BIN

cargo test --workspace --all-features --no-fail-fast

# The container images: static binaries, FROM scratch, built with buildah and run.
tests/images.sh
