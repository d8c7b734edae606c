#!/usr/bin/env bash
# Builds the real control plane drydock's tests run against — kube-apiserver,
# kube-controller-manager, kube-scheduler, etcd and kwok — from the Go modules pinned in
# this directory, into a cache outside target/ (so `cargo clean` keeps it).
#
# Idempotent: when every binary is present for this exact go.sum, it prints the directory
# and does nothing else. Prints the bin directory on its last line of stdout.
#
#   DRYDOCK_CACHE_DIR   cache root (default: ${XDG_CACHE_HOME:-~/.cache}/drydock)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache_root=${DRYDOCK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/drydock}
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" | sha256sum | cut -c1-12)
bin="$cache_root/cluster/${KUBERNETES_VERSION}-${key}/bin"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok)

have_all() {
  for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done
  [ -f "$bin/.complete" ]
}

if have_all; then
  echo "control plane already built in $bin" >&2
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: Go is not installed (need go >= $(awk '$1=="go"{print $2}' "$here/go.mod"))" >&2; exit 1; }

mkdir -p "$bin.tmp"
minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
pkg=k8s.io/component-base/version
cgo=k8s.io/client-go/pkg/version
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for p in $pkg $cgo; do
  ldflags+=" -X $p.gitVersion=${KUBERNETES_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor}"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=${date}"
done
ldflags+=" -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}"

echo "building control plane ${KUBERNETES_VERSION} into $bin (cold build: tens of minutes on 2 cores)" >&2
start=$(date +%s)
cd "$here"
# One `go build` for all six shares the compilation of their common packages.
CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "$ldflags" -o "$bin.tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl \
  go.etcd.io/etcd/server/v3 \
  sigs.k8s.io/kwok/cmd/kwok
# The etcd server module's main package is named after its directory.
[ -x "$bin.tmp/v3" ] && mv "$bin.tmp/v3" "$bin.tmp/etcd"
[ -x "$bin.tmp/server" ] && mv "$bin.tmp/server" "$bin.tmp/etcd"
for b in "${binaries[@]}"; do
  [ -x "$bin.tmp/$b" ] || { echo "build.sh: $b was not produced" >&2; exit 1; }
done
touch "$bin.tmp/.complete"
rm -rf "$bin"
mv "$bin.tmp" "$bin"
echo "control plane built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
