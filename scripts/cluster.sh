#!/usr/bin/env bash
# Build (once, cached) and start or stop a local Kubernetes cluster on loopback: a real
# kube-apiserver, kube-controller-manager and kube-scheduler with etcd, and kwok nodes so
# Pods are scheduled and report Running without kubelets or container runtimes.
#
# No binary or image registry is reachable here, so every binary is built from the Go module
# proxy at the pinned versions below into a versioned cache folder OUTSIDE the clone
# (MARQUEE_K8S_CACHE, default ~/.cache/marquee/k8s); a rerun only checks the versions.
#
#   scripts/cluster.sh build|up|down|status|env|kubeconfig
#
# Environment (all optional):
#   CLUSTER_NAME       kwok cluster name                     (default marquee)
#   CLUSTER_PORT       kube-apiserver port on 127.0.0.1      (default 32766)
#   CLUSTER_NODES      kwok nodes                            (default 2)
#   MARQUEE_K8S_CACHE  binaries cache root                   (default ~/.cache/marquee/k8s)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KUBE_VERSION="v1.34.4"
KWOK_VERSION="v0.8.0"
HELM_VERSION="v3.22.0"
ETCD_VERSION="v3.6.16"
# promtool of the Prometheus the chart deploys (Debian's is built without Kubernetes discovery,
# so it cannot check the chart's scrape config).
PROMETHEUS_VERSION="v0.53.0"  # Go module version of Prometheus 2.53.0
CACHE="${MARQUEE_K8S_CACHE:-$HOME/.cache/marquee/k8s}"
BIN="$CACHE/bin"
NAME="${CLUSTER_NAME:-marquee}"
PORT="${CLUSTER_PORT:-32766}"
NODES="${CLUSTER_NODES:-2}"
# kwokctl keeps its clusters here; ours, outside the clone and per user.
export KWOK_WORKDIR="${KWOK_WORKDIR:-$CACHE/kwok-workdir}"

log() { echo "cluster.sh: $*" >&2; }

need_go() {
  command -v go >/dev/null || { log "Go is required to build the cluster binaries"; exit 1; }
}

# Build tools run at the lowest priority: they take minutes of both cores on a cold machine.
gobuild() { nice -n 19 go "$@"; }
# No debug information: linking DWARF for ~100 MB binaries is a large part of each link.
LDFLAGS="-s -w"

stamp_ok() { [[ -x "$BIN/$1" && -f "$BIN/.$1.version" && "$(cat "$BIN/.$1.version")" == "$2" ]]; }
stamp() { echo "$2" > "$BIN/.$1.version"; }

build_helm() {
  stamp_ok helm "$HELM_VERSION" && return 0
  need_go; log "building helm $HELM_VERSION (a few minutes, once)"
  local t0=$SECONDS
  GOBIN="$BIN" gobuild install -ldflags "$LDFLAGS" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  stamp helm "$HELM_VERSION"; log "built helm in $((SECONDS - t0)) s"
}

build_kwok() {
  stamp_ok kwok "$KWOK_VERSION" && stamp_ok kwokctl "$KWOK_VERSION" && return 0
  need_go; log "building kwok and kwokctl $KWOK_VERSION (a few minutes, once)"
  local t0=$SECONDS
  GOBIN="$BIN" gobuild install -ldflags "$LDFLAGS" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  stamp kwok "$KWOK_VERSION"; stamp kwokctl "$KWOK_VERSION"
  log "built kwok and kwokctl in $((SECONDS - t0)) s"
}

build_etcd() {
  stamp_ok etcd "$ETCD_VERSION" && return 0
  need_go; log "building etcd $ETCD_VERSION (once)"
  local mod="$CACHE/src/etcd-$ETCD_VERSION" t0=$SECONDS
  mkdir -p "$mod"
  cp "$ROOT/scripts/cluster/etcd.go" "$mod/main.go"
  # go install refuses etcd's server module (it has replace lines): a module of our own.
  (cd "$mod" && [[ -f go.mod ]] || { cd "$mod" && go mod init marquee.local/etcd >/dev/null 2>&1; })
  (cd "$mod" && gobuild get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 \
    && gobuild mod tidy && gobuild build -ldflags "$LDFLAGS" -o "$BIN/etcd" .)
  stamp etcd "$ETCD_VERSION"; log "built etcd in $((SECONDS - t0)) s"
}

build_promtool() {
  stamp_ok promtool "$PROMETHEUS_VERSION" && return 0
  need_go; log "building promtool $PROMETHEUS_VERSION (a few minutes, once)"
  # Prometheus's go.mod has replace lines too: a module of our own that repeats them.
  local mod="$CACHE/src/promtool-$PROMETHEUS_VERSION" upstream t0=$SECONDS
  mkdir -p "$mod"
  upstream="$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json \
    "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  {
    echo "module marquee.local/promtool"
    echo
    echo "go 1.22"
    echo
    grep -E '^replace [^(]' "$upstream" || true
    sed -n '/^replace (/,/^)/p' "$upstream"
  } > "$mod/go.mod"
  # Only the discovery the chart uses (Kubernetes; file and http come with Prometheus's minimum):
  # the cloud SDKs of the other 20 plugins are most of a cold build.  A copy of the module with
  # a shorter generated plugin list replaces it (the module cache itself is read-only).
  local dir
  dir="$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json \
    "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
  rm -rf "$mod/prometheus"
  cp -r "$dir" "$mod/prometheus"
  chmod -R u+w "$mod/prometheus"
  printf 'package plugins\n\nimport _ "github.com/prometheus/prometheus/discovery/kubernetes"\n' \
    > "$mod/prometheus/plugins/plugins.go"
  echo "replace github.com/prometheus/prometheus => ./prometheus" >> "$mod/go.mod"
  (cd "$mod" && gobuild get "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" \
    && gobuild build -ldflags "$LDFLAGS" -o "$BIN/promtool" \
      github.com/prometheus/prometheus/cmd/promtool)
  stamp promtool "$PROMETHEUS_VERSION"; log "built promtool in $((SECONDS - t0)) s"
}

KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

build_kube() {
  local b missing=0
  for b in "${KUBE_BINARIES[@]}"; do stamp_ok "$b" "$KUBE_VERSION" || missing=1; done
  [[ $missing == 0 ]] && return 0
  need_go; log "building kube-apiserver, -controller-manager, -scheduler, kubectl $KUBE_VERSION (~10 min, once)"
  local mod="$CACHE/src/kube-$KUBE_VERSION" staging="v0.${KUBE_VERSION#v1.}" t0=$SECONDS
  mkdir -p "$mod/apiserver" "$mod/keep"
  cp "$ROOT/scripts/cluster/apiserver.go" "$mod/apiserver/main.go"
  cp "$ROOT/scripts/cluster/keep.go" "$mod/keep/keep.go"
  # `go install k8s.io/kubernetes/cmd/...` is refused (its go.mod has replace lines pointing at
  # ../staging): build from a module of our own that replaces each staging module by its
  # published version, the list taken from upstream's own go.mod.
  local upstream
  upstream="$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
    | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  {
    echo "module marquee.local/kube"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$upstream" | grep '=> ./staging' \
      | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$mod/go.mod"
  local ld="$LDFLAGS -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
  ld+=" -X k8s.io/component-base/version.gitMajor=1"
  ld+=" -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
  # One `go build` for all four: it compiles the shared packages once and links while compiling.
  (cd "$mod" && gobuild mod tidy \
    && gobuild build -ldflags "$ld" -o "$mod/out/" ./apiserver \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubectl)
  mv "$mod/out/apiserver" "$BIN/kube-apiserver"
  mv "$mod/out/kube-scheduler" "$mod/out/kube-controller-manager" "$mod/out/kubectl" "$BIN/"
  for b in "${KUBE_BINARIES[@]}"; do stamp "$b" "$KUBE_VERSION"; done
  log "built kube-apiserver, -controller-manager, -scheduler, kubectl in $((SECONDS - t0)) s"
}

build() {
  mkdir -p "$BIN"
  # One build at a time per cache (parallel test sessions, make targets): the others wait.
  exec 9>"$CACHE/.build.lock"
  flock 9
  # Two lanes: one `go build` leaves a core idle while it downloads, runs `go mod tidy` or links
  # one binary, so the Kubernetes build (the longest) runs beside the others.
  local t0=$SECONDS kube
  build_kube &
  kube=$!
  build_kwok
  build_helm
  build_etcd
  build_promtool
  wait "$kube"
  flock -u 9
  [[ $((SECONDS - t0)) -lt 2 ]] || log "built every binary in $((SECONDS - t0)) s"
  log "binaries ready in $BIN"
}

kwokctl() { "$BIN/kwokctl" "$@"; }

kubeconfig_path() { echo "$KWOK_WORKDIR/clusters/$NAME/kubeconfig.yaml"; }

is_up() {
  [[ -f "$(kubeconfig_path)" ]] && kubectl --kubeconfig "$(kubeconfig_path)" --request-timeout=3s \
    get --raw /readyz >/dev/null 2>&1
}

up() {
  build
  if is_up; then log "cluster $NAME already up"; return 0; fi
  kwokctl delete cluster --name "$NAME" >/dev/null 2>&1 || true
  log "starting kwok cluster $NAME on 127.0.0.1:$PORT"
  kwokctl create cluster --name "$NAME" --runtime binary \
    --kube-apiserver-port "$PORT" \
    --etcd-binary "$BIN/etcd" \
    --kube-apiserver-binary "$BIN/kube-apiserver" \
    --kube-controller-manager-binary "$BIN/kube-controller-manager" \
    --kube-scheduler-binary "$BIN/kube-scheduler" \
    --kwok-controller-binary "$BIN/kwok" \
    --kube-authorization \
    --config "$ROOT/scripts/cluster/kwok.yaml" \
    --wait 60s >&2
  kwokctl scale node --name "$NAME" --replicas "$NODES" >&2
  log "up; KUBECONFIG=$(kubeconfig_path)"
}

down() {
  [[ -x "$BIN/kwokctl" ]] || return 0
  kwokctl delete cluster --name "$NAME" >&2 || true
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  status) if is_up; then echo "up"; else echo "down"; exit 1; fi ;;
  kubeconfig) kubeconfig_path ;;
  env)
    echo "export PATH=$BIN:\$PATH"
    echo "export KUBECONFIG=$(kubeconfig_path)"
    ;;
  *) echo "usage: $0 build|up|down|status|env|kubeconfig" >&2; exit 2 ;;
esac
