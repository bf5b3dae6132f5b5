// Wrapper module: builds gVisor's runsc and containerd-shim-runsc-v1 from the "go" branch
// of gvisor.dev/gvisor as the Go module proxy serves it (a pseudo-version).
module agentflow.local/e2e/gvisor

go 1.26.3

require gvisor.dev/gvisor v0.0.0-20260527191743-a81fd9dd382e // indirect
