#!/bin/sh
# Builds the static natlab binary that the container image ships:
# deploy/Dockerfile runs this script, and so does deploy's test, so what CI
# checks is what the image contains. VERSION (optional) names the build
# when there is no .git to read it from.
set -eu
out=${1:?usage: deploy/build-static.sh OUTPUT}
cd "$(dirname "$0")/.."
CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
	-ldflags "-s -w -X github.com/natlab/natlab/internal/buildinfo.version=${VERSION:-}" \
	-o "$out" ./cmd/natlab
