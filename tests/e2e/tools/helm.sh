#!/usr/bin/env bash
# Print the path of a helm binary, building it from the Go module proxy first when it is missing.
#
#   helm="$(bash tests/e2e/tools/helm.sh)" && "$helm" lint charts/agentflow
#
# The binary goes to $AGENTFLOW_CACHE/bin/helm-$HELM_VERSION/helm (default /var/cache/agentflow),
# next to the binaries tests/e2e/cluster/build.sh makes, and is never rebuilt once there.
# Build output goes to stderr; stdout is only the path.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.16.4}"
CACHE="${AGENTFLOW_CACHE:-/var/cache/agentflow}"
DEST="$CACHE/bin/helm-$HELM_VERSION"

if [[ ! -x "$DEST/helm" ]]; then
    command -v go >/dev/null || { echo "helm.sh: 'go' is needed to build helm $HELM_VERSION" >&2; exit 1; }
    mkdir -p "$CACHE/bin"
    exec 9>"$CACHE/bin/.helm-$HELM_VERSION.lock"
    flock 9                                     # one build at a time; a waiter finds it built
    if [[ ! -x "$DEST/helm" ]]; then
        tmp="$(mktemp -d "$CACHE/bin/.helm-$HELM_VERSION.XXXXXX")"
        trap 'rm -rf "$tmp"' EXIT
        started=$SECONDS
        echo "helm.sh: building helm $HELM_VERSION from the Go module proxy into $DEST" >&2
        export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 GOFLAGS="-mod=mod -trimpath"
        # Like helm's Makefile: the Kubernetes version helm assumes (template, lint) is its client-go's,
        # not the v1.20 compiled in by default.
        gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -nE 's/^[[:space:]]*"GoMod": "(.*)",?$/\1/p')"
        k8s_minor="$(sed -nE 's#^[[:space:]]*k8s.io/client-go v0\.([0-9]+)\..*#\1#p' "$gomod" | head -1)"
        [[ -n "$k8s_minor" ]] || { echo "helm.sh: no k8s.io/client-go version in $gomod" >&2; exit 1; }
        ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
        for pkg in pkg/chartutil pkg/lint/rules; do
            ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
        done
        GOBIN="$tmp" go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
        rm -rf "$DEST" && mv "$tmp" "$DEST" && chmod 0755 "$DEST"
        trap - EXIT
        echo "helm.sh: built in $((SECONDS - started))s" >&2
    fi
fi
echo "$DEST/helm"
