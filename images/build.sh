#!/usr/bin/env bash
# Builds the two container images from statically linked (musl) release binaries, with
# buildah and no registry or daemon: FROM scratch, one binary each.
#
#   images/build.sh [TAG]        (default TAG: the workspace version)
#
# Needs what images/static-bins.sh needs (rustup, musl-tools), and buildah. Images land
# in buildah's local storage (vfs driver) as localhost/drydock-agent:TAG and
# localhost/drydock-operator:TAG; push them with `buildah push`. Prints the two image
# names on its last two lines.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-$(awk -F'"' '/^version *=/{print $2; exit}' Cargo.toml)}
buildah=(buildah --storage-driver vfs)
command -v buildah >/dev/null || { echo "images/build.sh: buildah is missing (apt-get install buildah)" >&2; exit 1; }

# The static binaries, built as the benchmarks build them (images/static-bins.sh).
bins=$(images/static-bins.sh | tail -n 1)

for component in agent operator; do
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp "$bins/drydock-$component" "$ctx/"
  "${buildah[@]}" bud --quiet --isolation chroot --layers=false \
    -f "images/$component.Containerfile" -t "localhost/drydock-$component:$tag" "$ctx" >&2
  rm -rf "$ctx"
  trap - EXIT
done
echo "localhost/drydock-agent:$tag"
echo "localhost/drydock-operator:$tag"
