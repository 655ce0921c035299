#!/usr/bin/env bash
# bench/matrix.sh: run the kernel matrix over both topologies (routers one
# router apart, and on one segment) RUNS times in a row, and print per run
# whether every technique cell was predicted = measured, how many pairs got
# a direct path, and the wall time. Issue #10's done criterion is three
# consecutive runs with every cell matching on both topologies.
#
#   sudo bench/matrix.sh [RUNS]           (default 3)
#   NATLAB=/path/to/natlab bench/matrix.sh
#
# Needs: go, jq, root or CAP_NET_ADMIN. The race-like cells (those that
# depend on what lies between the routers) are run 20 times each by
#   go test -run '^$' -bench SegmentCells -benchtime 1x -timeout 60m ./lab
set -euo pipefail

runs=${1:-3}
cd "$(dirname "$0")/.."
command -v jq >/dev/null || { echo "bench/matrix.sh: jq not found (Debian package jq)" >&2; exit 1; }
bin=${NATLAB:-}
if [ -z "$bin" ]; then
	bin=$(mktemp -d)/natlab
	go build -o "$bin" ./cmd/natlab
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

fails=0
printf '%-4s %-8s %-6s %-8s %-12s %s\n' run topology match direct pairs seconds
for run in $(seq 1 "$runs"); do
	for topo in routed shared; do
		f=$out/$topo-$run.json
		"$bin" lab --matrix --kernel --topology "$topo" --json >"$f" 2>/dev/null || true
		if ! jq -e .pairs "$f" >/dev/null 2>&1; then
			echo "run $run $topo: no report" >&2
			fails=$((fails + 1))
			continue
		fi
		match=$(jq -r .match "$f")
		[ "$match" = true ] || fails=$((fails + 1))
		printf '%-4s %-8s %-6s %-8s %-12s %.0f\n' "$run" "$topo" "$match" \
			"$(jq '[.pairs[] | select(.verdict.direct)] | length' "$f")" "$(jq '.pairs | length' "$f")" \
			"$(jq '.duration_ms / 1000' "$f")"
		jq -r '.pairs[] | select((.mismatches // []) | length > 0) | "  \(.a) × \(.b): \(.mismatches | join("; "))"' "$f"
	done
done
echo "runs with a mismatch: $fails"
[ "$fails" -eq 0 ]
