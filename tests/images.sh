#!/usr/bin/env bash
# The container images, built for real (images/build.sh: static musl binaries, buildah,
# FROM scratch, no registry) and checked:
#  - each holds exactly its one binary, with the intended entrypoint and user;
#  - the binary runs inside the image (`--version` prints the workspace version);
#  - the operator, static and alone in the image, resolves a host name through the
#    container's /etc/hosts and reaches it (musl's resolver needs no NSS modules);
#  - their sizes, compressed and not, are printed (and must stay under 32 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(awk -F'"' '/^version *=/{print $2; exit}' Cargo.toml)
tag=test
images/build.sh "$tag" >/dev/null 2>"${TMPDIR:-/tmp}/drydock-images-build.log" \
  || { cat "${TMPDIR:-/tmp}/drydock-images-build.log" >&2; exit 1; }
buildah=(buildah --storage-driver vfs)
work=$(mktemp -d)
containers=()
cleanup() {
  for c in "${containers[@]}"; do "${buildah[@]}" rm "$c" >/dev/null 2>&1 || true; done
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "tests/images.sh: FAIL: $*" >&2; exit 1; }

declare -A user=([agent]="0:0" [operator]="65532:65532")
printf '%-18s %12s %12s\n' image uncompressed compressed
for component in agent operator; do
  image=localhost/drydock-$component:$tag
  entry=$("${buildah[@]}" inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' "$image")
  [ "$entry" = "[/drydock-$component]" ] || fail "$image entrypoint is $entry"
  u=$("${buildah[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
  [ "$u" = "${user[$component]}" ] || fail "$image user is $u, want ${user[$component]}"
  # Sizes: the OCI layout as a registry would store it (gzip) and the unpacked layer.
  "${buildah[@]}" push --quiet "$image" "oci:$work/$component" >/dev/null
  compressed=$(python3 - "$work/$component" <<'PY'
import json, sys, os
root = sys.argv[1]
idx = json.load(open(os.path.join(root, "index.json")))
m = json.load(open(os.path.join(root, "blobs", *idx["manifests"][0]["digest"].split(":"))))
print(sum(l["size"] for l in m["layers"]) + m["config"]["size"])
PY
)
  c=$("${buildah[@]}" from --pull-never --quiet "$image"); containers+=("$c")
  mnt=$("${buildah[@]}" mount "$c")
  files=$(cd "$mnt" && find . -mindepth 1 | sort | tr '\n' ' ')
  [ "$files" = "./drydock-$component " ] || fail "$image holds more than its binary: $files"
  uncompressed=$(stat -c %s "$mnt/drydock-$component")
  "${buildah[@]}" umount "$c" >/dev/null
  printf '%-18s %12s %12s\n' "drydock-$component" "$uncompressed" "$compressed"
  [ "$uncompressed" -lt 33554432 ] || fail "$image is $uncompressed bytes"
  out=$("${buildah[@]}" run --isolation chroot "$c" -- "/drydock-$component" --version)
  [ "$out" = "drydock-$component $version" ] || fail "$image --version printed: $out"
done

# Name resolution in the static operator: it must find "api.drydock.test" in the
# container's /etc/hosts and send its first requests to the server there. `--no-hosts`
# keeps buildah from mounting its own generated /etc/hosts, which otherwise wins over
# ours in some runs.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -u -m http.server --bind 127.0.0.1 "$port" --directory "$work" >"$work/http.log" 2>&1 &
server_pid=$!
# The server must listen before the operator starts (its first request would be refused).
for _ in $(seq 100); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
printf '127.0.0.1 localhost\n127.0.0.1 api.drydock.test\n' >"$work/hosts"
cat >"$work/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://api.drydock.test:$port"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
KC
c=${containers[-1]}
timeout 10 "${buildah[@]}" run --isolation chroot --no-hosts \
  -v "$work/hosts:/etc/hosts:ro" -v "$work/kubeconfig:/kubeconfig:ro" "$c" -- \
  /drydock-operator --kubeconfig /kubeconfig --identity image-test --listen 127.0.0.1:0 \
  >"$work/operator.log" 2>&1 || true
grep -q 'GET /apis/coordination.k8s.io/v1/namespaces/drydock-system/leases/drydock-operator' "$work/http.log" \
  || fail "the operator in its image did not reach api.drydock.test:$port by name:
$(tail -5 "$work/operator.log")
$(tail -5 "$work/http.log")"
echo "images: both run --version; the operator resolved api.drydock.test via /etc/hosts"
