# shellcheck shell=bash
# shellcheck disable=SC2034  # variables used by the scripts that source this file
# Common settings for the AgentFlow local e2e cluster scripts. Sourced, not run.
CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/../../.." && pwd)"

# Versions (the Go wrapper modules under go/ pin the same ones).
K8S_VERSION="v1.33.13"
ETCD_VERSION="v3.6.16"
KWOK_VERSION="v0.7.0"
CONTAINERD_VERSION="v2.1.9"
# The NetworkPolicy enforcer: kube-router's network policy controller only (iptables + ipset).
KUBE_ROUTER_VERSION="v2.1.0"
# Argo Workflows' controller: only a benchmark competitor (bench/argo_race.py) on a private loopback
# kwok control plane, never part of the cluster up.sh starts.
ARGO_WORKFLOWS_VERSION="v3.7.3"
# gVisor: the "go" branch of gvisor.dev/gvisor, pinned by go/gvisor/go.mod.
GVISOR_VERSION="$(grep -oE 'gvisor\.dev/gvisor v[^ ]+' "$CLUSTER_DIR/go/gvisor/go.mod" | head -1 | cut -d' ' -f2)"
PAUSE_IMAGE="registry.k8s.io/pause:3.10"
BASE_IMAGE="docker.io/library/debian:bookworm-slim"
OPERATOR_IMAGE="${AGENTFLOW_OPERATOR_IMAGE:-localhost/agentflow-operator:dev}"
RUNTIME_IMAGE="${AGENTFLOW_RUNTIME_IMAGE:-localhost/agentflow-runtime:dev}"
DEBIAN_SUITE="bookworm"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# Canonical paths (no symlinks: /var/run -> /run would make runsc's gofer refuse its mounts).
CACHE="$(realpath -m "${AGENTFLOW_CACHE:-/var/cache/agentflow}")"
RUN_DIR="$(realpath -m "${AGENTFLOW_RUN_DIR:-/var/run/agentflow-cluster}")"
K8S_BIN="$CACHE/bin/kubernetes-$K8S_VERSION"
ETCD_BIN="$CACHE/bin/etcd-$ETCD_VERSION"
KWOK_BIN="$CACHE/bin/kwok-$KWOK_VERSION"
CONTAINERD_BIN="$CACHE/bin/containerd-$CONTAINERD_VERSION"
GVISOR_BIN="$CACHE/bin/gvisor-${GVISOR_VERSION:-unknown}"
KUBE_ROUTER_BIN="$CACHE/bin/kube-router-$KUBE_ROUTER_VERSION"
ARGO_WORKFLOWS_BIN="$CACHE/bin/argo-workflow-controller-$ARGO_WORKFLOWS_VERSION"   # + crds/ from the module
KUBE_ROUTER_USER="agentflow-e2e:kube-router"   # its client certificate's CN (read-only ClusterRole)
IMAGES_DIR="$CACHE/images"
CONTAINERD_ROOT="$CACHE/containerd-root-$CONTAINERD_VERSION"   # kept between bring-ups: imported images stay

# Ports and addresses (all on this machine).
APISERVER_PORT="${AGENTFLOW_APISERVER_PORT:-6443}"
ETCD_CLIENT_PORT=2379
ETCD_PEER_PORT=2380
POD_CIDR="10.88.0.0/16"
POD_GATEWAY="10.88.0.1"            # the bridge's address: pods reach host servers here
SERVICE_CIDR="10.96.0.0/16"
CNI_BRIDGE="afbr0"
# Pod IPs come from 10.88.0.0-10.88.254.255; 10.88.255.0/24 is left for addresses of this host that
# tests listen on besides POD_GATEWAY. HOST_SECOND_ADDRESS is on the bridge too: a stand-in for an
# address such as a cloud's metadata server (169.254.169.254 itself has no route from pods here).
POD_RANGE_END="10.88.254.255"
HOST_SECOND_ADDRESS="10.88.255.254"
NODE_NAME="${AGENTFLOW_NODE_NAME:-agentflow-node}"
CONTAINERD_SOCK="$RUN_DIR/containerd/containerd.sock"

export GOFLAGS="${GOFLAGS:-} -mod=mod -trimpath"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED="${CGO_ENABLED:-0}"
export PATH="$K8S_BIN:$ETCD_BIN:$CONTAINERD_BIN:$KWOK_BIN:$GVISOR_BIN:$KUBE_ROUTER_BIN:$PATH"

# up.sh and down.sh take this lock: concurrent bring-ups/teardowns (two test sessions sharing the
# cluster, say) run one after the other instead of interleaving.
cluster_lock() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/cluster.lock"
  if ! flock -n 9; then
    log "waiting for another up.sh/down.sh to finish ($CACHE/cluster.lock)"
    flock -w 1800 9 || die "timed out waiting for $CACHE/cluster.lock"
  fi
}

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
