// Wrapper module: builds kube-router from github.com/cloudnativelabs/kube-router/v2. The local cluster
// runs only its network policy controller (--run-firewall, no router, no service proxy): the enforcing
// NetworkPolicy implementation, with iptables and ipset (see ../../README.md).
module agentflow.local/e2e/kube-router

go 1.21

require github.com/cloudnativelabs/kube-router/v2 v2.1.0
