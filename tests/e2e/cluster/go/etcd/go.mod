// Wrapper module: builds the etcd server from go.etcd.io/etcd/server/v3 (Debian ships only 3.4).
module agentflow.local/e2e/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.6.16
