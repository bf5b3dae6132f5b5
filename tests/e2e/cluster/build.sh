#!/usr/bin/env bash
# Build (once, cached by version under $AGENTFLOW_CACHE) every Go binary of the local cluster:
# kubernetes (apiserver, controller-manager, scheduler, kubelet, kube-proxy, kubectl), etcd,
# containerd 2.x, gVisor (runsc + containerd-shim-runsc-v1), kube-router (the NetworkPolicy
# enforcer) and kwok; on request only, Argo Workflows' workflow-controller (a benchmark competitor).
# Usage: build.sh [kubernetes|etcd|containerd|gvisor|kube-router|kwok|argo-workflows ...]
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
  # shellcheck disable=SC2046  # one package path per binary
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
  # One build-time change to the shim (nothing vendored in the repository): at start it sets its
  # OOM score to -999, which needs CAP_SYS_RESOURCE; without it (this Firecracker VM) the shim
  # failed with "failed to set OOM Score on shim: write /proc/N/oom_score_adj: permission denied".
  # The shim is built from a copy of the downloaded module where that error is ignored (not even
  # logged: the shim's "start" stdout must carry only its address); where the capability exists
  # nothing changes. runsc itself is built unchanged.
  local dir work="$CACHE/build/gvisor-shim"
  dir="$(cd "$CLUSTER_DIR/go/gvisor" && go mod download gvisor.dev/gvisor && go list -m -f '{{.Dir}}' gvisor.dev/gvisor)"
  rm -rf "$work"; mkdir -p "$work/wrapper"
  cp -r "$dir" "$work/gvisor"; chmod -R u+w "$work/gvisor"
  sed -i 's|return shim.BootstrapParams{}, fmt.Errorf("failed to set OOM Score on shim: %w", err)|_ = err /* agentflow: shim OOM score is best effort */|' \
    "$work/gvisor/pkg/shim/v1/manager.go"
  grep -q 'agentflow: shim OOM score is best effort' "$work/gvisor/pkg/shim/v1/manager.go" || die "gVisor shim change no longer applies"
  cp "$CLUSTER_DIR/go/gvisor/go.mod" "$CLUSTER_DIR/go/gvisor/go.sum" "$work/wrapper/"
  (cd "$work/wrapper" && go mod edit -replace gvisor.dev/gvisor=../gvisor)
  (cd "$CLUSTER_DIR/go/gvisor" \
     && go build -ldflags="$LDSTRIP -X gvisor.dev/gvisor/runsc/version.version=$GVISOR_VERSION" \
          -o "$GVISOR_BIN.tmp/runsc" gvisor.dev/gvisor/runsc)
  (cd "$work/wrapper" && go build -ldflags="$LDSTRIP" -o "$GVISOR_BIN.tmp/containerd-shim-runsc-v1" gvisor.dev/gvisor/shim)
  rm -rf "$work"
  rm -rf "$GVISOR_BIN"; mv "$GVISOR_BIN.tmp" "$GVISOR_BIN"
}

build_containerd() {
  [[ -x "$CONTAINERD_BIN/containerd" && -x "$CONTAINERD_BIN/containerd-shim-runc-v2" && -x "$CONTAINERD_BIN/ctr" ]] \
    && { log "containerd $CONTAINERD_VERSION: cached"; return; }
  log "containerd $CONTAINERD_VERSION: building containerd, containerd-shim-runc-v2, ctr"
  mkdir -p "$CONTAINERD_BIN.tmp"
  local m=github.com/containerd/containerd/v2
  (cd "$CLUSTER_DIR/go/containerd" && go build -tags "no_btrfs no_devmapper no_zfs" \
     -ldflags="$LDSTRIP -X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Revision=module" \
     -o "$CONTAINERD_BIN.tmp/" $m/cmd/containerd $m/cmd/containerd-shim-runc-v2 $m/cmd/ctr)
  rm -rf "$CONTAINERD_BIN"; mv "$CONTAINERD_BIN.tmp" "$CONTAINERD_BIN"
}

build_kwok() {
  [[ -x "$KWOK_BIN/kwok" ]] && { log "kwok $KWOK_VERSION: cached"; return; }
  log "kwok $KWOK_VERSION: building"
  mkdir -p "$KWOK_BIN.tmp"
  (cd "$CLUSTER_DIR/go/kwok" && go build -ldflags="$LDSTRIP" \
     -o "$KWOK_BIN.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
  rm -rf "$KWOK_BIN"; mv "$KWOK_BIN.tmp" "$KWOK_BIN"
}

build_kube_router() {
  [[ -x "$KUBE_ROUTER_BIN/kube-router" ]] && { log "kube-router $KUBE_ROUTER_VERSION: cached"; return; }
  log "kube-router $KUBE_ROUTER_VERSION: building"
  mkdir -p "$KUBE_ROUTER_BIN.tmp"
  local m=github.com/cloudnativelabs/kube-router/v2
  (cd "$CLUSTER_DIR/go/kube-router" && go build \
     -ldflags="$LDSTRIP -X $m/pkg/version.Version=$KUBE_ROUTER_VERSION -X $m/pkg/version.BuildDate=module" \
     -o "$KUBE_ROUTER_BIN.tmp/kube-router" $m/cmd/kube-router)
  rm -rf "$KUBE_ROUTER_BIN"; mv "$KUBE_ROUTER_BIN.tmp" "$KUBE_ROUTER_BIN"
}

# Argo Workflows' workflow-controller and its CRDs (the module zip carries manifests/), for
# bench/argo_race.py only: not in the default targets, never started by up.sh.
build_argo_workflows() {
  [[ -x "$ARGO_WORKFLOWS_BIN/workflow-controller" && -d "$ARGO_WORKFLOWS_BIN/crds" ]] \
    && { log "argo-workflows $ARGO_WORKFLOWS_VERSION: cached"; return; }
  log "argo-workflows $ARGO_WORKFLOWS_VERSION: building workflow-controller (slow on a cold cache)"
  local m=github.com/argoproj/argo-workflows/v3 dir
  dir="$(cd "$CLUSTER_DIR/go/argo-workflows" && go mod download $m && go list -m -f '{{.Dir}}' $m)"
  rm -rf "$ARGO_WORKFLOWS_BIN.tmp"; mkdir -p "$ARGO_WORKFLOWS_BIN.tmp/crds"
  (cd "$CLUSTER_DIR/go/argo-workflows" && go build \
     -ldflags="$LDSTRIP -X $m.version=$ARGO_WORKFLOWS_VERSION -X $m.gitTreeState=clean" \
     -o "$ARGO_WORKFLOWS_BIN.tmp/workflow-controller" $m/cmd/workflow-controller)
  # The minimal CRDs are the ones Argo's own install manifests apply.
  cp "$dir"/manifests/base/crds/minimal/argoproj.io_*.yaml "$ARGO_WORKFLOWS_BIN.tmp/crds/"
  chmod -R u+w "$ARGO_WORKFLOWS_BIN.tmp"
  rm -rf "$ARGO_WORKFLOWS_BIN"; mv "$ARGO_WORKFLOWS_BIN.tmp" "$ARGO_WORKFLOWS_BIN"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(etcd containerd gvisor kubernetes kube-router)
for t in "${targets[@]}"; do "build_${t//-/_}"; done
