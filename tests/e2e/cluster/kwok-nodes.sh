#!/usr/bin/env bash
# Add (or top up to) N kwok-simulated nodes to the running local cluster (up.sh --mode kwok
# starts kwok and calls this). Simulated nodes are tainted kwok.x-k8s.io/node=fake:NoSchedule,
# so only pods that tolerate the taint (scale tests) land on them; their pods never run.
# Usage: kwok-nodes.sh N
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
N="${1:-10}"
KC="${KUBECONFIG:-$RUN_DIR/kubeconfig}"
{
  for i in $(seq 0 $((N - 1))); do
    cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
spec:
  taints:
  - effect: NoSchedule
    key: kwok.x-k8s.io/node
    value: fake
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
YAML
  done
} | "$K8S_BIN/kubectl" --kubeconfig "$KC" apply -f - >/dev/null
"$K8S_BIN/kubectl" --kubeconfig "$KC" wait --for=condition=Ready node -l type=kwok --timeout=120s >/dev/null
log "kwok: $N simulated nodes Ready"
