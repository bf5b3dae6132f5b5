#!/usr/bin/env bash
# Build (once, cached by version under $AGENTFLOW_CACHE) every Go binary of the local cluster:
# kubernetes (apiserver, controller-manager, scheduler, kubelet, kube-proxy, kubectl), etcd,
# gVisor (runsc + containerd-shim-runsc-v1) and kwok. Usage: build.sh [kubernetes|etcd|gvisor|kwok ...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LDSTRIP="-s -w"

build_kubernetes() {
  local out="$K8S_BIN" bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  local b missing=0
  for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || missing=1; done
  [[ $missing == 0 ]] && { log "kubernetes $K8S_VERSION: cached in $out"; return; }
  log "kubernetes $K8S_VERSION: building ${bins[*]} (slow on a cold cache)"
  local ver="${K8S_VERSION#v}" commit
  commit="$(cd "$CLUSTER_DIR/go/kubernetes" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | python3 -c 'import json,sys; print((json.load(sys.stdin).get("Origin") or {}).get("Hash",""))')"
  local date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local ld="$LDSTRIP" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=${ver%%.*} -X $pkg.gitMinor=$(cut -d. -f2 <<<"$ver")"
    ld+=" -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  mkdir -p "$out.tmp"
  (cd "$CLUSTER_DIR/go/kubernetes" && go build -ldflags="$ld" -o "$out.tmp/" \
      $(printf 'k8s.io/kubernetes/cmd/%s ' "${bins[@]}"))
  rm -rf "$out"; mv "$out.tmp" "$out"
}

build_etcd() {
  [[ -x "$ETCD_BIN/etcd" ]] && { log "etcd $ETCD_VERSION: cached"; return; }
  log "etcd $ETCD_VERSION: building"
  mkdir -p "$ETCD_BIN.tmp"
  (cd "$CLUSTER_DIR/go/etcd" && go build -ldflags="$LDSTRIP" -o "$ETCD_BIN.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$ETCD_BIN"; mv "$ETCD_BIN.tmp" "$ETCD_BIN"
}

build_gvisor() {
  [[ -x "$GVISOR_BIN/runsc" && -x "$GVISOR_BIN/containerd-shim-runsc-v1" ]] && { log "gvisor $GVISOR_VERSION: cached"; return; }
  log "gvisor $GVISOR_VERSION: building runsc + containerd-shim-runsc-v1"
  mkdir -p "$GVISOR_BIN.tmp"
  (cd "$CLUSTER_DIR/go/gvisor" && go build -ldflags="$LDSTRIP -X gvisor.dev/gvisor/runsc/version.version=$GVISOR_VERSION" \
       -o "$GVISOR_BIN.tmp/runsc" gvisor.dev/gvisor/runsc \
     && go build -ldflags="$LDSTRIP" -o "$GVISOR_BIN.tmp/containerd-shim-runsc-v1" gvisor.dev/gvisor/shim)
  rm -rf "$GVISOR_BIN"; mv "$GVISOR_BIN.tmp" "$GVISOR_BIN"
}

build_kwok() {
  [[ -x "$KWOK_BIN/kwok" ]] && { log "kwok $KWOK_VERSION: cached"; return; }
  log "kwok $KWOK_VERSION: building"
  mkdir -p "$KWOK_BIN.tmp"
  (cd "$CLUSTER_DIR/go/kwok" && go build -ldflags="$LDSTRIP" \
     -o "$KWOK_BIN.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
  rm -rf "$KWOK_BIN"; mv "$KWOK_BIN.tmp" "$KWOK_BIN"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(etcd gvisor kubernetes)
for t in "${targets[@]}"; do "build_$t"; done
