// Wrapper module: builds containerd 2.x (containerd, containerd-shim-runc-v2, ctr) from
// github.com/containerd/containerd/v2. gVisor's shim speaks the shim bootstrap protocol of
// containerd 2 (JSON bootstrap parameters), which Debian bookworm's containerd 1.6 cannot parse.
module agentflow.local/e2e/containerd

go 1.24.2

require github.com/containerd/containerd/v2 v2.1.9
