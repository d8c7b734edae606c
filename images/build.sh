#!/usr/bin/env bash
# Builds the two container images from statically linked (musl) release binaries, with
# buildah and no registry or daemon: FROM scratch, one binary each.
#
#   images/build.sh [TAG]        (default TAG: the workspace version)
#
# Needs: rustup (adds the musl target when missing), musl-tools (musl-gcc, for ring's C
# code), buildah. Images land in buildah's local storage (vfs driver) as
# localhost/drydock-agent:TAG and localhost/drydock-operator:TAG; push them with
# `buildah push`. Prints the two image names on its last two lines.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
tag=${1:-$(awk -F'"' '/^version *=/{print $2; exit}' Cargo.toml)}
buildah=(buildah --storage-driver vfs)

if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target" >&2
fi
command -v musl-gcc >/dev/null || { echo "images/build.sh: musl-gcc is missing (apt-get install musl-tools)" >&2; exit 1; }
command -v buildah >/dev/null || { echo "images/build.sh: buildah is missing (apt-get install buildah)" >&2; exit 1; }

cargo build --release --locked --target "$target" -p drydock-agent -p drydock-operator >&2

for component in agent operator; do
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp "${CARGO_TARGET_DIR:-target}/$target/release/drydock-$component" "$ctx/"
  "${buildah[@]}" bud --quiet --isolation chroot --layers=false \
    -f "images/$component.Containerfile" -t "localhost/drydock-$component:$tag" "$ctx" >&2
  rm -rf "$ctx"
  trap - EXIT
done
echo "localhost/drydock-agent:$tag"
echo "localhost/drydock-operator:$tag"
