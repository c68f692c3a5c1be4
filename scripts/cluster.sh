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
# helm, kwok and etcd are built in the same Go module and the same `go build` as the Kubernetes
# binaries, with every k8s.io staging module replaced by v0.${KUBE_VERSION#v1.}, so Go's minimal
# version selection picks ONE version of client-go, apimachinery, gRPC, OpenTelemetry and
# protobuf and they compile once (a cold build of helm v3.22 / kwok v0.8 beside it compiled
# three copies: Kubernetes libraries v0.37, v0.36 and v0.34).  Hence releases made against
# Kubernetes 1.34's libraries or older, so none pulls a shared dependency past Kubernetes's own:
HELM_VERSION="v3.19.5"   # the last helm 3 on k8s.io v0.34 (v3.20 moved to v0.35)
KWOK_VERSION="v0.7.0"    # no kwok release is on v0.34; v0.7.0 (v0.33) builds on v0.34.4
ETCD_VERSION="v3.6.4"    # the etcd release whose client kube-apiserver v1.34.4 is built with
# promtool of the Prometheus the chart deploys (Debian's is built without Kubernetes discovery,
# so it cannot check the chart's scrape config).  Prometheus 2.53's own older libraries stay in
# a module of their own (the second build lane).
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

# Every binary of the one `go build`, with the version its stamp records.
declare -A K8S_BINARIES=(
  [kube-apiserver]="$KUBE_VERSION" [kube-controller-manager]="$KUBE_VERSION"
  [kube-scheduler]="$KUBE_VERSION" [kubectl]="$KUBE_VERSION"
  [helm]="$HELM_VERSION" [kwok]="$KWOK_VERSION" [kwokctl]="$KWOK_VERSION" [etcd]="$ETCD_VERSION"
)

build_k8s() {
  local b missing=0
  for b in "${!K8S_BINARIES[@]}"; do stamp_ok "$b" "${K8S_BINARIES[$b]}" || missing=1; done
  [[ $missing == 0 ]] && return 0
  need_go
  log "building kube-apiserver, -controller-manager, -scheduler, kubectl $KUBE_VERSION, helm" \
    "$HELM_VERSION, kwok and kwokctl $KWOK_VERSION, etcd $ETCD_VERSION (~10 min, once)"
  local staging="v0.${KUBE_VERSION#v1.}" t0=$SECONDS
  local mod="$CACHE/src/k8s-$KUBE_VERSION-helm-$HELM_VERSION-kwok-$KWOK_VERSION-etcd-$ETCD_VERSION"
  mkdir -p "$mod/apiserver" "$mod/etcd" "$mod/keep"
  cp "$ROOT/scripts/cluster/apiserver.go" "$mod/apiserver/main.go"
  cp "$ROOT/scripts/cluster/etcd.go" "$mod/etcd/main.go"
  cp "$ROOT/scripts/cluster/keep.go" "$mod/keep/keep.go"
  # `go install k8s.io/kubernetes/cmd/...` (and of etcd's server) is refused: their go.mod files
  # have replace lines pointing at ../staging.  So a module of our own that replaces each staging
  # module by its published version, the list taken from upstream's own go.mod; the commands
  # from other modules are `tool` lines, so `go mod tidy` keeps what they need.
  local upstream
  upstream="$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json \
    "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  {
    echo "module marquee.local/k8s"
    echo
    echo "go 1.24"
    echo
    printf 'require (\n\t%s\n\t%s\n\t%s\n\t%s\n)\n\n' "k8s.io/kubernetes $KUBE_VERSION" \
      "helm.sh/helm/v3 $HELM_VERSION" "sigs.k8s.io/kwok $KWOK_VERSION" \
      "go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    printf 'tool (\n\t%s\n\t%s\n\t%s\n)\n\n' helm.sh/helm/v3/cmd/helm sigs.k8s.io/kwok/cmd/kwok \
      sigs.k8s.io/kwok/cmd/kwokctl
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$upstream" | grep '=> ./staging' \
      | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$mod/go.mod"
  # kwok v0.7.0 names two things Kubernetes 1.34's libraries removed: networking.k8s.io/v1alpha1
  # (registered to decode etcd snapshots; 1.34 serves no such API) and the watch-list blueprint
  # annotation's constant (used only with client-go's WatchListClient gate, off by default in
  # v0.34; the literal is the constant's value).  A copy of the module without them replaces
  # it (the module cache itself is read-only), as for promtool below.
  local kwok
  kwok="$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
    | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
  rm -rf "$mod/kwok"
  cp -r "$kwok" "$mod/kwok"
  chmod -R u+w "$mod/kwok"
  sed -i '/networkingv1alpha1/d' "$mod/kwok/pkg/kwokctl/etcd/scheme.go"
  local key="metav1.InitialEventsListBlueprintAnnotationKey"
  sed -i "s|$key|\"kubernetes.io/initial-events-list-blueprint\"|" \
    "$mod/kwok/pkg/utils/informer/informer.go"
  echo "replace sigs.k8s.io/kwok => ./kwok" >> "$mod/go.mod"
  local minor; minor="$(echo "$KUBE_VERSION" | cut -d. -f2)"
  local ld="$LDFLAGS -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
  ld+=" -X k8s.io/component-base/version.gitMajor=1"
  ld+=" -X k8s.io/component-base/version.gitMinor=$minor"
  # What helm's release build stamps: its version, and the Kubernetes version its libraries are.
  ld+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
  ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1"
  ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  # One `go build` for all: it compiles the shared packages once and links while compiling.
  rm -rf "$mod/out"
  (cd "$mod" && gobuild mod tidy \
    && gobuild build -ldflags "$ld" -o "$mod/out/" ./apiserver ./etcd \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubectl helm.sh/helm/v3/cmd/helm \
      sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl)
  mv "$mod/out/apiserver" "$BIN/kube-apiserver"
  for b in "${!K8S_BINARIES[@]}"; do
    [[ $b == kube-apiserver ]] || mv "$mod/out/$b" "$BIN/"
    stamp "$b" "${K8S_BINARIES[$b]}"
  done
  log "built the Kubernetes binaries, helm, kwok and etcd in $((SECONDS - t0)) s"
}

build() {
  mkdir -p "$BIN"
  # One build at a time per cache (parallel test sessions, make targets): the others wait.
  exec 9>"$CACHE/.build.lock"
  flock 9
  # Two lanes: one `go build` leaves a core idle while it downloads, runs `go mod tidy` or links
  # one binary, so promtool builds beside the Kubernetes one (the longest).
  local t0=$SECONDS k8s
  build_k8s &
  k8s=$!
  build_promtool
  wait "$k8s"
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
