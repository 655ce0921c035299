#!/usr/bin/env bash
# bench/load.sh: floods a `natlab serve` on loopback from several attacker
# addresses (Binding flood, rendezvous creates and junk steps, idle TCP
# connections, oversized TURN frames) while legitimate clients measure
# what they still get (bench/loadbench), with the server's default limits.
# Prints the legitimate clients' answered share and latency, the server's
# peak RSS and what its limits dropped; exits 1 if a goal is missed:
#   - legitimate Binding (UDP and TCP) answered >= 99%
#   - every legitimate pairing and TURN allocation succeeds
#   - server peak RSS <= RSS_BOUND_MIB (default 100)
#
#   bench/load.sh                         (10 s, 50,000 flood datagrams/s)
#   TIME=20s FLOOD=100000 bench/load.sh
#   NATLAB=/path/to/natlab bench/load.sh  (use a built binary)
#
# Needs: go, python3. Loopback only; bounded by TIME.
set -euo pipefail
cd "$(dirname "$0")/.."

dur=${TIME:-10s}
flood=${FLOOD:-50000}
bound=${RSS_BOUND_MIB:-100}

work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [[ -n ${NATLAB:-} ]]; then
	cp "$NATLAB" "$work/natlab"
else
	go build -o "$work/natlab" ./cmd/natlab
fi
go build -o "$work/loadbench" ./bench/loadbench

echo "alice:wonderland" >"$work/users"
"$work/natlab" serve --listen 127.0.0.1:0 --users "$work/users" --json --metrics 127.0.0.1:0 >"$work/serve.json" 2>"$work/serve.err" &
pids+=($!)
server_pid=$!
for _ in $(seq 50); do [[ -s $work/serve.json ]] && grep -q 'serving metrics' "$work/serve.err" && break; sleep 0.1; done
[[ -s $work/serve.json ]] || { echo "natlab serve did not start: $(cat "$work/serve.err")" >&2; exit 1; }
server=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tcp"])' "$work/serve.json")
metrics=$(grep -o 'http://[^ ]*/metrics' "$work/serve.err")

echo "# natlab serve $server (default limits), $(nproc) CPUs; attack for $dur, Binding flood $flood/s"
out=$("$work/loadbench" -server "$server" -pid "$server_pid" -time "$dur" -flood "$flood")
status=0
python3 - "$out" "$bound" <<'PY' || status=$?
import json, sys
r, bound = json.loads(sys.argv[1]), float(sys.argv[2])
print("attack sent: " + ", ".join(f"{k} {v}" for k, v in sorted(r["attack"].items())))
ok = True
for name in ("binding", "binding_tcp"):
    s = r[name]
    good = s["answered_pct"] >= 99
    ok &= good
    print(f"legitimate {name:12s} {s['answered']}/{s['sent']} answered ({s['answered_pct']}%, goal >= 99%), p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms")
for name in ("pairings", "allocations"):
    s = r[name]
    good = s["tried"] > 0 and s["ok"] == s["tried"]
    ok &= good
    print(f"legitimate {name:12s} {s['ok']}/{s['tried']} succeeded")
good = 0 < r["server_peak_rss_mib"] <= bound
ok &= good
print(f"server peak RSS {r['server_peak_rss_mib']} MiB (bound {bound:.0f} MiB)")
print("load: " + ("all goals met" if ok else "GOAL MISSED"))
sys.exit(0 if ok else 1)
PY
python3 - "$metrics" <<'PY' || true
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(("natlab_rate_limited_total", "natlab_conns_refused_total", "natlab_rendezvous_muted_total", "natlab_rendezvous_rejected_total", "natlab_stun_responses_total")):
        print("server " + line)
PY
exit $status
