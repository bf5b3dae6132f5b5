#!/usr/bin/env bash
# Bring up the AgentFlow local one-node Kubernetes cluster on this machine:
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler + containerd (runc and
# gVisor runsc) + kubelet (+ kube-proxy, + kube-router enforcing NetworkPolicies), CNI bridge
# 10.88.0.0/16, RuntimeClass "gvisor", locally built images imported. Builds whatever is missing
# first (cached by version).
# --mode kwok: the same, plus kwok and N simulated nodes (tainted kwok.x-k8s.io/node=fake).
#
# Usage: up.sh [--mode real|kwok] [--kwok-nodes N] [--no-images] [--no-project-images] [--no-kube-proxy]
#              [--no-network-policy]
#   --no-network-policy (or AGENTFLOW_NETWORK_POLICY=0): do not start kube-router; NetworkPolicies
#   are then stored but not enforced (the bridge CNI ignores them).
#   --no-project-images (or AGENTFLOW_PROJECT_IMAGES=0): only the base and pause images, not the
#   operator/runtime images from the Dockerfiles (images.sh builds those on its own too).
#   env: AGENTFLOW_CACHE (default /var/cache/agentflow), AGENTFLOW_RUN_DIR
#        (default /var/run/agentflow-cluster), MODE=kwok, KWOK_NODES=N,
#        AGENTFLOW_GVISOR_PLATFORM (default: first of systrap, ptrace that works).
# Afterwards: export KUBECONFIG=$AGENTFLOW_RUN_DIR/kubeconfig; kubectl is in $K8S_BIN.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODE="${MODE:-real}"
KWOK_NODES="${KWOK_NODES:-10}"
WITH_IMAGES=1
WITH_PROJECT_IMAGES="${AGENTFLOW_PROJECT_IMAGES:-1}"
WITH_KUBE_PROXY=1
WITH_NETWORK_POLICY="${AGENTFLOW_NETWORK_POLICY:-1}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --mode) MODE="$2"; shift ;;
    --mode=*) MODE="${1#--mode=}" ;;
    --kwok-nodes) KWOK_NODES="$2"; shift ;;
    --no-images) WITH_IMAGES=0 ;;
    --no-project-images) WITH_PROJECT_IMAGES=0 ;;
    --no-kube-proxy) WITH_KUBE_PROXY=0 ;;
    --no-network-policy) WITH_NETWORK_POLICY=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
[[ "$MODE" == real || "$MODE" == kwok ]] || die "MODE must be real or kwok"
[[ $EUID -eq 0 ]] || die "must run as root (kubelet, containerd, mounts, network)"

cluster_lock
T0=$(date +%s)
mkdir -p "$CACHE/logs" "$RUN_DIR"
PKI="$RUN_DIR/pki"
LOGS="$RUN_DIR/logs"
PIDS="$RUN_DIR/pids"

# ---------------------------------------------------------------- packages
APT_PACKAGES=(runc containernetworking-plugins buildah debootstrap iptables ipset conntrack
              iproute2 openssl ca-certificates kmod util-linux mount gcc libc6-dev)
install_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  log "apt: installing ${missing[*]}"
  # Refresh the package lists if they are older than a day (or absent).
  if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]]; then
    apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------- processes
is_running() { [[ -f "$PIDS/$1.pid" ]] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }
start() { # name cmd...
  local name="$1"; shift
  if is_running "$name"; then log "$name: already running"; return; fi
  log "$name: starting"
  setsid nohup "$@" >"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$PIDS/$name.pid"
}
wait_for() { # description seconds command...
  local what="$1" secs="$2"; shift 2
  local end=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) > end )); then log "timed out waiting for $what"; return 1; fi
    sleep 0.5
  done
}
check_alive() { is_running "$1" || { tail -30 "$LOGS/$1.log" >&2; die "$1 exited (log: $LOGS/$1.log)"; }; }

# ---------------------------------------------------------------- PKI
gen_cert() { # name subject days "ext" [ca-name]
  local name="$1" subj="$2" ext="$3"
  [[ -s "$PKI/$name.crt" ]] && return
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%b\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
make_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  if [[ ! -s "$PKI/ca.crt" ]]; then
    openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=agentflow-e2e-ca" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  local client='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth'
  local server='basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth'
  gen_cert apiserver "/CN=kube-apiserver" \
    "$server\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:$POD_GATEWAY,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  gen_cert admin "/O=system:masters/CN=kubernetes-admin" "$client"
  gen_cert controller-manager "/CN=system:kube-controller-manager" "$client"
  gen_cert scheduler "/CN=system:kube-scheduler" "$client"
  gen_cert kube-proxy "/CN=system:kube-proxy" "$client"
  gen_cert kube-router "/CN=$KUBE_ROUTER_USER" "$client"
  gen_cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
  gen_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  gen_cert front-proxy-client "/CN=front-proxy-client" "$client"
  gen_cert kubelet "/CN=$NODE_NAME" "$server\nsubjectAltName=IP:$POD_GATEWAY,IP:127.0.0.1,DNS:$NODE_NAME,DNS:localhost"
  [[ -s "$PKI/sa.key" ]] || { openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null; openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null; }
}
kubeconfig() { # file user-cert-name
  local f="$1" u="$2"
  cat >"$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: agentflow-e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $u
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$u.crt")
    client-key-data: $(base64 -w0 <"$PKI/$u.key")
contexts:
- name: agentflow-e2e
  context: {cluster: agentflow-e2e, user: $u}
current-context: agentflow-e2e
EOF
  chmod 600 "$f"
}

# ---------------------------------------------------------------- gVisor platform
pick_gvisor_platform() {
  if [[ -n "${AGENTFLOW_GVISOR_PLATFORM:-}" ]]; then echo "$AGENTFLOW_GVISOR_PLATFORM"; return; fi
  local p d
  for p in systrap ptrace; do
    d="$(mktemp -d)"
    # 'runsc do' runs a command in a sandbox with the host's root filesystem: a cheap smoke test.
    if timeout 60 "$GVISOR_BIN/runsc" --root "$d/root" --platform "$p" --network none \
         --debug-log "$d/log/" "do" /bin/true >"$d/out" 2>&1; then
      rm -rf "$d"; echo "$p"; return
    fi
    log "gvisor: platform $p does not work here: $(tail -3 "$d/out" | tr '\n' ' ')"
    cp "$d/out" "$CACHE/logs/runsc-probe-$p.log" 2>/dev/null || true
    rm -rf "$d"
  done
  echo none
}

# How containerd runs runsc: gVisor's own shim, containerd-shim-runsc-v1 (default; build.sh
# builds it so that it survives the missing CAP_SYS_RESOURCE here), or, with
# AGENTFLOW_GVISOR_SHIM=runc, containerd's runc v2 shim with BinaryName = runsc (the way Docker
# runs gVisor; fine for one-container sandboxes, but it does not see the exit of a container
# that joins a pod's sandbox, so Kubernetes pods never finish: see README troubleshooting).
pick_gvisor_shim() {
  if [[ -n "${AGENTFLOW_GVISOR_SHIM:-}" ]]; then echo "$AGENTFLOW_GVISOR_SHIM"; return; fi
  echo runsc
}
runsc_runtime_toml() {
  local r='[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]'
  if [[ $GVISOR_SHIM == runsc ]]; then
    printf '    %s\n      runtime_type = "io.containerd.runsc.v1"\n' "$r"
    printf '      [%s]\n        TypeUrl = "io.containerd.runsc.v1.options"\n        ConfigPath = "%s"\n' \
      "${r:1:${#r}-2}.options" "$RUN_DIR/containerd/runsc.toml"
  else
    printf '    %s\n      runtime_type = "io.containerd.runc.v2"\n' "$r"
    printf '      [%s]\n        BinaryName = "%s"\n        Root = "%s"\n        SystemdCgroup = false\n' \
      "${r:1:${#r}-2}.options" "$RUN_DIR/containerd/runsc" "$RUN_DIR/runsc"
  fi
}

# ---------------------------------------------------------------- configs
write_configs() {
  mkdir -p "$RUN_DIR/containerd" "$RUN_DIR/cni/net.d" "$RUN_DIR/kubelet" "$RUN_DIR/runsc" "$CONTAINERD_ROOT"
  {
    printf 'binary_name = "%s"\nroot = "%s"\n' "$GVISOR_BIN/runsc" "$RUN_DIR/runsc"
    [[ "${AGENTFLOW_RUNSC_DEBUG:-0}" == 1 ]] && printf 'log_level = "debug"\nlog_path = "%s"\n' "$RUN_DIR/runsc-logs/shim.log"
    printf '[runsc_config]\n  platform = "%s"\n' "$GVISOR_PLATFORM"
    [[ "${AGENTFLOW_RUNSC_DEBUG:-0}" == 1 ]] && printf '  debug = "true"\n  debug-log = "%s"\n' "$RUN_DIR/runsc-logs/"
    true
  } >"$RUN_DIR/containerd/runsc.toml"
  # runsc with this machine's platform, for the runc shim (gVisor's shim reads runsc.toml).
  local debug=""
  [[ "${AGENTFLOW_RUNSC_DEBUG:-0}" == 1 ]] && debug="--debug --debug-log=$RUN_DIR/runsc-logs/"
  printf '#!/bin/sh\nexec "%s" --platform=%s %s "$@"\n' "$GVISOR_BIN/runsc" "$GVISOR_PLATFORM" "$debug" >"$RUN_DIR/containerd/runsc"
  chmod 755 "$RUN_DIR/containerd/runsc"
  cat >"$RUN_DIR/containerd/config.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT"
state = "$RUN_DIR/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # No CAP_SYS_RESOURCE on this VM: OOM score adjustments below containerd's own are not
  # possible, so clamp them (the pause container asks for -998) instead of failing.
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384
  # Pod network namespaces under our state dir, so down.sh finds and removes every one.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$RUN_DIR/runc"
        SystemdCgroup = false
$(runsc_runtime_toml)
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN_DIR/cni/net.d"
    max_conf_num = 1
EOF
  cat >"$RUN_DIR/cni/net.d/10-agentflow.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "agentflow",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$RUN_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY", "rangeEnd": "$POD_RANGE_END"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$RUN_DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
oomScoreAdj: 0
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $POD_GATEWAY
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
maxPods: 250
nodeStatusReportFrequency: 10s
syncFrequency: 10s
volumeStatsAggPeriod: 0s
EOF
}

# ---------------------------------------------------------------- NetworkPolicy enforcement
# kube-router's network policy controller only (no BGP routing, no service proxy: kube-proxy and the
# bridge CNI keep those jobs). It runs on the host like kube-proxy and programs iptables (filter
# table chains KUBE-ROUTER-INPUT/FORWARD/OUTPUT, KUBE-POD-FW-*, KUBE-NWPLCY-*) and ipsets
# (KUBE-SRC-*, KUBE-DST-*); down.sh removes them. Its client certificate's user may only read what
# its informers watch (ClusterRole below). No health or metrics port (both would listen on every
# address); it is ready once its first sync is in the log.
start_kube_router() {
  kc apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: agentflow-e2e:kube-router
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, endpoints, nodes]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: agentflow-e2e:kube-router
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "agentflow-e2e:kube-router"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "$KUBE_ROUTER_USER"}
EOF
  if is_running kube-router; then log "kube-router: already running"; return; fi
  start kube-router "$KUBE_ROUTER_BIN/kube-router" --kubeconfig "$RUN_DIR/kube-router.kubeconfig" \
    --hostname-override "$NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
    --enable-cni=false --enable-ipv4=true --enable-ipv6=false \
    --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
    --health-port 0 --metrics-port 0 --v 1
  wait_for "kube-router's first NetworkPolicy sync" 120 grep -q 'sync iptables took' "$LOGS/kube-router.log" \
    || { check_alive kube-router; tail -30 "$LOGS/kube-router.log" >&2; die "kube-router did not sync"; }
  check_alive kube-router
  log "kube-router: NetworkPolicies enforced ($(( $(date +%s) - T0 ))s)"
}

# ---------------------------------------------------------------- main
install_packages
mkdir -p "$LOGS" "$PIDS"
# Images (network- and pip-bound) are built while the Go builds (CPU-bound) run; imported later.
IMAGE_ARGS=()
[[ $WITH_PROJECT_IMAGES == 1 ]] || IMAGE_ARGS=(--only cluster)
IMAGES_PID=""
if [[ $WITH_IMAGES == 1 ]]; then
  "$CLUSTER_DIR/images.sh" --no-import "${IMAGE_ARGS[@]}" >"$CACHE/logs/images.log" 2>&1 &
  IMAGES_PID=$!
fi
# shellcheck disable=SC2046
"$CLUSTER_DIR/build.sh" etcd containerd kubernetes gvisor \
  $( [[ $WITH_NETWORK_POLICY == 1 ]] && echo kube-router ) $( [[ $MODE == kwok ]] && echo kwok )

# Fresh cluster state each bring-up (PKI and cached images are kept).
if ! is_running etcd && ! is_running kube-apiserver; then
  rm -rf "$RUN_DIR/etcd" "$RUN_DIR/cni/ipam" "$RUN_DIR/runsc-logs"
fi
make_pki
for u in admin controller-manager scheduler kube-proxy kube-router kubelet-client; do kubeconfig "$RUN_DIR/$u.kubeconfig" "$u"; done
cp "$RUN_DIR/admin.kubeconfig" "$RUN_DIR/kubeconfig"
KC="$RUN_DIR/kubeconfig"
kc() { "$K8S_BIN/kubectl" --kubeconfig "$KC" "$@"; }

# The bridge exists before any pod so the node IP (its address) is stable and local.
if ! ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
  ip link add "$CNI_BRIDGE" type bridge
fi
ip addr replace "$POD_GATEWAY/16" dev "$CNI_BRIDGE"
ip addr replace "$HOST_SECOND_ADDRESS/32" dev "$CNI_BRIDGE"
ip link set "$CNI_BRIDGE" up
sysctl -qw net.ipv4.ip_forward=1 || true
modprobe br_netfilter 2>/dev/null || true
# Pod-to-pod traffic is bridged: iptables (kube-proxy's hairpin, kube-router's policies) must see it.
sysctl -qw net.bridge.bridge-nf-call-iptables=1 \
  || log "WARNING: net.bridge.bridge-nf-call-iptables unset: pod-to-pod NetworkPolicies are not enforced"
modprobe overlay 2>/dev/null || true

GVISOR_PLATFORM="$(pick_gvisor_platform)"
GVISOR_SHIM="$(pick_gvisor_shim)"
log "gvisor: platform $GVISOR_PLATFORM, shim $( [[ $GVISOR_SHIM == runsc ]] && echo containerd-shim-runsc-v1 || echo 'containerd-shim-runc-v2 (BinaryName runsc)')"
printf 'platform=%s\nshim=%s\n' "$GVISOR_PLATFORM" "$GVISOR_SHIM" >"$RUN_DIR/gvisor"
[[ $GVISOR_PLATFORM != none ]] || log "WARNING: no gVisor platform works here; RuntimeClass gvisor pods will fail (see $CACHE/logs/runsc-probe-*.log)"
write_configs

start etcd "$ETCD_BIN/etcd" --name agentflow --data-dir "$RUN_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "agentflow=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
start containerd env PATH="$GVISOR_BIN:$PATH" containerd --config "$RUN_DIR/containerd/config.toml"

start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address 0.0.0.0 --secure-port "$APISERVER_PORT" --advertise-address "$POD_GATEWAY" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP,Hostname \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
  --requestheader-client-ca-file "$PKI/ca.crt" --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
  --authorization-mode Node,RBAC --allow-privileged=true \
  --enable-admission-plugins NodeRestriction --profiling=false --v=1
wait_for "etcd" 60 "$ETCD_BIN/etcd" --version
check_alive etcd
wait_for "kube-apiserver /readyz" 120 kc get --raw /readyz || { tail -30 "$LOGS/kube-apiserver.log" >&2; die "kube-apiserver not ready"; }
log "kube-apiserver ready ($(( $(date +%s) - T0 ))s)"

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$RUN_DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$RUN_DIR/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$RUN_DIR/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --use-service-account-credentials --controllers '*,bootstrapsigner,tokencleaner' \
  --enable-garbage-collector=true --service-cluster-ip-range "$SERVICE_CIDR" \
  --allocate-node-cidrs=false --profiling=false --v=1
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$RUN_DIR/scheduler.kubeconfig" \
  --authentication-kubeconfig "$RUN_DIR/scheduler.kubeconfig" \
  --authorization-kubeconfig "$RUN_DIR/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1

wait_for "containerd socket" 60 test -S "$CONTAINERD_SOCK" || { tail -30 "$LOGS/containerd.log" >&2; die "containerd did not start"; }
check_alive containerd
if [[ $WITH_IMAGES == 1 ]]; then
  wait "$IMAGES_PID" || { tail -30 "$CACHE/logs/images.log" >&2; die "building images failed (log: $CACHE/logs/images.log)"; }
  "$CLUSTER_DIR/images.sh" "${IMAGE_ARGS[@]}"   # all cached by now: imports what containerd lacks
fi
start kubelet "$K8S_BIN/kubelet" --config "$RUN_DIR/kubelet/config.yaml" \
  --kubeconfig "$RUN_DIR/kubelet-client.kubeconfig" --root-dir "$RUN_DIR/kubelet/root" \
  --hostname-override "$NODE_NAME" --node-ip "$POD_GATEWAY" \
  --node-labels "agentflow.dev/e2e=true" --v=1
if [[ $WITH_KUBE_PROXY == 1 ]]; then
  start kube-proxy "$K8S_BIN/kube-proxy" --kubeconfig "$RUN_DIR/kube-proxy.kubeconfig" \
    --hostname-override "$NODE_NAME" --proxy-mode iptables --cluster-cidr "$POD_CIDR" --nodeport-addresses "$POD_CIDR" \
    --bind-address 127.0.0.1 --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256 \
    --conntrack-max-per-core 0 --oom-score-adj 0 --v=1
fi
wait_for "node $NODE_NAME Ready" 180 kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s \
  || { check_alive kubelet; tail -30 "$LOGS/kubelet.log" >&2; die "node not Ready"; }
kc apply -f - >/dev/null <<EOF
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: gvisor
handler: runsc
EOF

if [[ $WITH_NETWORK_POLICY == 1 ]]; then start_kube_router; fi

check_alive kube-controller-manager
check_alive kube-scheduler
wait_for "default service account" 60 kc -n default get serviceaccount default

if [[ $MODE == kwok ]]; then
  # kwok simulates the extra nodes (and their pods); it talks to the API with the admin kubeconfig.
  start kwok "$KWOK_BIN/kwok" --kubeconfig "$KC" --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 --cidr=10.89.0.0/16 --node-ip=10.89.0.1 \
    --server-address 127.0.0.1:10247
  "$CLUSTER_DIR/kwok-nodes.sh" "$KWOK_NODES"
fi

echo "$MODE" >"$RUN_DIR/mode"
log "cluster up in $(( $(date +%s) - T0 ))s (mode $MODE)"
cat <<EOF
export KUBECONFIG=$KC
export PATH=$K8S_BIN:\$PATH
# pods reach servers on this host at $POD_GATEWAY (bridge $CNI_BRIDGE)
EOF
