#!/usr/bin/env bash
# Regenerates gen/ferry/v1 from proto/ferry/v1 with buf (built by e2e/k8s/build) and
# the Go plugins pinned in go.mod (buf.gen.yaml).
#   clients/go/generate.sh          # rewrite gen/
#   clients/go/generate.sh --check  # fail when gen/ is stale (the tests run this)
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="$PATH:/usr/local/go/bin"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
GOFLAGS=-mod=mod go build -o "$work/bin/" google.golang.org/protobuf/cmd/protoc-gen-go \
  google.golang.org/grpc/cmd/protoc-gen-go-grpc
tools="$(../../e2e/k8s/build)"
rm -rf out
PATH="$work/bin:$PATH" "$tools/buf" generate ../../proto --path ../../proto/ferry/v1
mv out "$work/out"
if [[ "${1:-}" == --check ]]; then
  if ! diff -r "$work/out/gen" gen >/dev/null; then
    echo "clients/go/gen is stale: run clients/go/generate.sh" >&2
    diff -r "$work/out/gen" gen | head -20 >&2
    exit 1
  fi
  echo "stubs up to date"
  exit 0
fi
rm -rf gen
cp -r "$work/out/gen" gen
echo "generated clients/go/gen"
