// Wrapper module: builds kwok (simulated nodes for scale tests) from sigs.k8s.io/kwok.
module agentflow.local/e2e/kwok

go 1.24.0

require sigs.k8s.io/kwok v0.7.0
