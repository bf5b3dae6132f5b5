#!/usr/bin/env bash
# Print the path of one of the small Go test tools in this folder, building it first when it is missing.
#
#   kstatus="$(bash tests/e2e/tools/gotool.sh kstatus)"           # sigs.k8s.io/cli-utils kstatus
#   health="$(bash tests/e2e/tools/gotool.sh argocd-health)"      # gopher-lua, as Argo CD runs health scripts
#   bash tests/e2e/tools/gotool.sh --path kstatus                  # only print where it goes (exit 1: not built)
#
# Each tool is a Go module under tests/e2e/tools/NAME (go.mod, go.sum, main.go), built from the Go module
# proxy into $AGENTFLOW_CACHE/bin/NAME-HASH/NAME (default /var/cache/agentflow), HASH being that of the
# module's files: a changed tool is rebuilt, an unchanged one never. Binaries are never committed.
# Build output goes to stderr; stdout is only the path.
set -euo pipefail

PATH_ONLY=0
if [[ "${1:-}" == "--path" ]]; then PATH_ONLY=1; shift; fi
NAME="${1:?usage: gotool.sh [--path] NAME (a folder of tests/e2e/tools holding a Go module)}"
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$NAME"
[[ -f "$SRC/go.mod" ]] || { echo "gotool.sh: $SRC/go.mod not found" >&2; exit 2; }
CACHE="${AGENTFLOW_CACHE:-/var/cache/agentflow}"
HASH="$(cd "$SRC" && cat go.mod go.sum ./*.go 2>/dev/null | sha256sum | cut -c1-12)"
DEST="$CACHE/bin/$NAME-$HASH"
if [[ $PATH_ONLY == 1 ]]; then echo "$DEST/$NAME"; [[ -x "$DEST/$NAME" ]]; exit; fi

if [[ ! -x "$DEST/$NAME" ]]; then
    command -v go >/dev/null || { echo "gotool.sh: 'go' is needed to build $NAME" >&2; exit 1; }
    mkdir -p "$CACHE/bin"
    exec 9>"$CACHE/bin/.$NAME.lock"
    flock 9                                     # one build at a time; a waiter finds it built
    if [[ ! -x "$DEST/$NAME" ]]; then
        tmp="$(mktemp -d "$CACHE/bin/.$NAME.XXXXXX")"
        trap 'rm -rf "$tmp"' EXIT
        started=$SECONDS
        echo "gotool.sh: building $NAME from the Go module proxy into $DEST" >&2
        # -mod=readonly: go.sum is committed and must cover every module (the build never edits the tree).
        (cd "$SRC" && GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath -buildvcs=false" \
            go build -ldflags "-s -w" -o "$tmp/$NAME" .) >&2
        rm -rf "$DEST" && mv "$tmp" "$DEST" && chmod 0755 "$DEST"
        trap - EXIT
        echo "gotool.sh: built $NAME in $((SECONDS - started))s" >&2
    fi
fi
echo "$DEST/$NAME"
