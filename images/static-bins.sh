#!/usr/bin/env bash
# Builds the static (musl) release binaries of drydock-agent and drydock-operator: the
# builds the container images ship (images/build.sh) and the fleet benchmarks measure
# (tests/bench.sh). One place, so that what is measured is what is shipped.
#
#   images/static-bins.sh        prints the directory holding both binaries (last line)
#
# Needs: rustup (adds the musl target when missing) and musl-tools (musl-gcc, for ring's
# C code). Cargo's output goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl

if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target" >&2
fi
command -v musl-gcc >/dev/null || { echo "images/static-bins.sh: musl-gcc is missing (apt-get install musl-tools)" >&2; exit 1; }

cargo build --release --locked --target "$target" -p drydock-agent -p drydock-operator >&2

out="${CARGO_TARGET_DIR:-target}/$target/release"
for bin in drydock-agent drydock-operator; do
  [ -x "$out/$bin" ] || { echo "images/static-bins.sh: $out/$bin was not built" >&2; exit 1; }
done
(cd "$out" && pwd)
