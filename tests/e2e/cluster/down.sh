#!/usr/bin/env bash
# Stop the AgentFlow local cluster started by up.sh: pods first (through the kubelet, so CNI
# and sandboxes are torn down cleanly), then kubelet, leftover containers and shims,
# containerd, kwok, kube-proxy and kube-router rules, control plane, etcd; unmount what they
# mounted, remove the bridge. Build caches and imported images (under $AGENTFLOW_CACHE) are kept.
# Usage: down.sh [--check]   (--check: exit 1 if a cluster process, port, bridge, mount, or
#                             kube-router iptables chain or ipset is still there)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHECK=0
[[ "${1:-}" == "--check" ]] && CHECK=1
PIDS="$RUN_DIR/pids"
KC="$RUN_DIR/kubeconfig"
PORTS=("$APISERVER_PORT" "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" 10250 10248 10257 10259 10249 10256 10247)

pid_of() { [[ -f "$PIDS/$1.pid" ]] && cat "$PIDS/$1.pid"; }
alive() { local p; p="$(pid_of "$1" || true)"; [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }
stop() { # name [timeout-seconds]
  local name="$1" secs="${2:-20}" p i
  p="$(pid_of "$name" || true)"
  if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then
    log "$name: stopping (pid $p)"
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then log "$name: killing"; kill -KILL "$p" 2>/dev/null || true; sleep 0.2; fi
  fi
  rm -f "$PIDS/$name.pid"
}
# This cluster's container shims and gVisor sandboxes: a containerd-shim or runsc executable whose
# command line names this cluster's run directory. (Nothing else: other programs that merely use
# the cluster, an operator under test with our kubeconfig say, are never touched.)
own_procs() {
  local p exe
  for p in $(pgrep -f -- "$RUN_DIR/" 2>/dev/null || true); do
    exe="$(readlink "/proc/$p/exe" 2>/dev/null || true)"
    case "$exe" in
      */containerd-shim-*|"$GVISOR_BIN"/runsc*) echo "$p" ;;
    esac
  done
}

# kube-router's NetworkPolicy state (iptables filter table and ipsets; names from its netpol
# controller). Its own --cleanup-config is not used: it also flushes every IPVS service on the
# machine and undoes routing and proxy setup this cluster never made.
kube_router_chains() { iptables -w -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-ROUTER-|KUBE-POD-FW-|KUBE-NWPLCY-)/ {print $2}'; }
kube_router_ipsets() { ipset list -n 2>/dev/null | grep -E '^(KUBE-SRC-|KUBE-DST-|TMP-[A-Z2-7]{16}$)' || true; }
kube_router_cleanup() {
  local chain n c s
  for chain in INPUT FORWARD OUTPUT; do
    for n in $(iptables -w -n -L "$chain" --line-numbers 2>/dev/null | awk '/\/\* kube-router netpol/ {print $1}' | sort -rn); do
      iptables -w -D "$chain" "$n" || true
    done
  done
  for c in $(kube_router_chains); do iptables -w -F "$c" || true; done
  for c in $(kube_router_chains); do iptables -w -X "$c" || true; done
  for s in $(kube_router_ipsets); do ipset destroy "$s" || true; done
}

check() {
  local bad=0 p port
  for p in $(own_procs); do log "still running: $(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null)"; bad=1; done
  for f in "$PIDS"/*.pid; do [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null && { log "still running: $f"; bad=1; }; done
  for port in "${PORTS[@]}"; do
    if ss -Hltn "sport = :$port" | grep -q .; then log "port $port still taken: $(ss -Hltnp "sport = :$port")"; bad=1; fi
  done
  ip link show "$CNI_BRIDGE" >/dev/null 2>&1 && { log "bridge $CNI_BRIDGE still there"; bad=1; }
  findmnt -rno TARGET | grep -q "^$RUN_DIR/" && { log "mounts left under $RUN_DIR"; bad=1; }
  [[ -z "$(kube_router_chains)" ]] || { log "kube-router iptables chains left: $(kube_router_chains | tr '\n' ' ')"; bad=1; }
  [[ -z "$(kube_router_ipsets)" ]] || { log "kube-router ipsets left: $(kube_router_ipsets | tr '\n' ' ')"; bad=1; }
  return $bad
}
if [[ $CHECK == 1 ]]; then check && log "clean: no cluster process, port, bridge, mount, kube-router chain or ipset left"; exit $?; fi
cluster_lock

# 1. Pods, through the API and the kubelet (CNI DEL, sandbox stop), if the cluster answers.
if alive kube-apiserver && alive kubelet && [[ -f "$KC" ]]; then
  log "deleting all pods"
  timeout 60 "$K8S_BIN/kubectl" --kubeconfig "$KC" delete pods --all --all-namespaces \
    --grace-period=0 --force --wait=true --timeout=50s >/dev/null 2>&1 || true
fi
stop kwok
stop kubelet 30

# 2. Whatever containers are left, then containerd.
if alive containerd && [[ -S "$CONTAINERD_SOCK" ]]; then
  ctr_() { timeout 30 ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }
  for t in $(ctr_ tasks ls -q 2>/dev/null || true); do ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
  sleep 1
  for t in $(ctr_ tasks ls -q 2>/dev/null || true); do ctr_ tasks rm -f "$t" >/dev/null 2>&1 || true; done
  for c in $(ctr_ containers ls -q 2>/dev/null || true); do ctr_ containers rm "$c" >/dev/null 2>&1 || true; done
fi
stop containerd 20
for p in $(own_procs); do kill -KILL "$p" 2>/dev/null || true; done

# 3. kube-router's and kube-proxy's iptables rules, then the control plane and etcd.
stop kube-router
kube_router_cleanup
if alive kube-proxy; then
  stop kube-proxy
  "$K8S_BIN/kube-proxy" --cleanup --proxy-mode iptables >/dev/null 2>&1 || true
fi
stop kube-scheduler
stop kube-controller-manager
stop kube-apiserver
stop etcd

# 4. Mounts (deepest first), network namespaces created for pods, the bridge and veths.
mapfile -t mounts < <(findmnt -rno TARGET | grep "^$RUN_DIR/\|^$CONTAINERD_ROOT/" | sort -r || true)
for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
if [[ -d "$RUN_DIR/cni/ipam" ]]; then
  # The bridge's leftover veth peers go with it; network namespaces of our pods are named in
  # containerd's state, already removed with the sandboxes above.
  rm -rf "$RUN_DIR/cni/ipam"
fi
ip link del "$CNI_BRIDGE" 2>/dev/null || true
rm -f "$CONTAINERD_SOCK" "$CONTAINERD_SOCK.ttrpc"
rm -f "$RUN_DIR/mode"
check && log "cluster down" || { log "cluster down, with leftovers (see above)"; exit 1; }
