"""End-to-end tests against a real Kubernetes cluster (see cluster/README.md)."""
