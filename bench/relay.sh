#!/usr/bin/env bash
# bench/relay.sh: natlab serve against coturn's turnserver on this machine
# (loopback), with one client for both (bench/relaybench, natlab's own
# relay.Measure and a Binding load generator):
#   - TURN relay throughput and RTT (two allocations relaying to each other)
#     over UDP and TCP; goal: natlab >= 1.0x coturn's throughput; and the
#     server CPU time per relayed Mbit (less noisy on a shared machine)
#   - STUN Binding responses per second; goal: natlab >= 1.0x coturn
#
#   bench/relay.sh                      (defaults)
#   TIME=5s BYTES=134217728 RUNS=3 bench/relay.sh
#   NATLAB=/path/to/natlab bench/relay.sh   (use a built binary)
#   FAMILY=6 bench/relay.sh             (both servers on ::1: TURN over IPv6,
#                                        IPv6 relayed addresses)
#
# Needs: go, python3, turnserver (Debian package coturn).
set -euo pipefail
cd "$(dirname "$0")/.."

dur=${TIME:-3s}
bytes=${BYTES:-67108864}
runs=${RUNS:-3}
# lo is the loopback address both servers listen and relay on, host the
# form it takes in host:port.
lo=127.0.0.1 host=127.0.0.1 af=AF_INET
if [[ ${FAMILY:-4} == 6 ]]; then
	lo=::1 host='[::1]' af=AF_INET6
fi

if ! command -v turnserver >/dev/null; then
	echo "bench/relay.sh: turnserver not found (Debian package coturn)" >&2
	exit 1
fi

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
go build -o "$work/relaybench" ./bench/relaybench

free_port() {
	python3 -c 'import socket, sys
af, lo = getattr(socket, sys.argv[1]), sys.argv[2]
for _ in range(100):
    u = socket.socket(af, socket.SOCK_DGRAM); u.bind((lo, 0)); p = u.getsockname()[1]
    t = socket.socket(af, socket.SOCK_STREAM)
    try:
        t.bind((lo, p)); print(p); break
    except OSError: pass
    finally: u.close(); t.close()' "$af" "$lo"
}

# Wait until something answers STUN on $host:$1.
wait_stun() {
	for _ in $(seq 50); do
		if "$work/relaybench" -mode stun -server "$host:$1" -sockets 1 -window 1 -time 100ms 2>/dev/null | grep -q '"answered":[1-9]'; then
			return 0
		fi
		sleep 0.1
	done
	echo "bench/relay.sh: nothing answers on $host:$1" >&2
	exit 1
}

echo "alice:wonderland" >"$work/users"
np=$(free_port)
# One client floods from one address here: the per-source limits (which
# coturn does not have) are turned off to measure speed, not policy.
"$work/natlab" serve --listen "$host:$np" --users "$work/users" --user-quota 0 \
	--binding-rate 0 --turn-rate 0 >"$work/natlab.log" 2>&1 &
pids+=($!)
natlab_pid=$!
cp=$(free_port)
turnserver -n --listening-ip "$lo" --relay-ip "$lo" --listening-port "$cp" \
	--realm natlab --lt-cred-mech --user alice:wonderland --allow-loopback-peers \
	--no-tls --no-dtls --no-cli --log-file "$work/coturn.log" >/dev/null 2>&1 &
pids+=($!)
coturn_pid=$!
wait_stun "$np"
wait_stun "$cp"

field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }

echo "# natlab serve $host:$np vs coturn $(turnserver --version 2>/dev/null | head -1) $host:$cp; $(nproc) CPUs"
echo "# TURN: 2 allocations relaying to each other, bursts of <= $bytes bytes / $dur each way, best of $runs, the servers taking turns; server CPU per relayed Mbit, median of the runs"
# cpu_ticks is a process's user+system CPU time in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)

# turn_once runs relaybench once against a server and appends
# "cpu_ticks json" to the file $work/<server>.<transport>.
turn_once() { # server port pid transport
	local c0 c1 out
	c0=$(cpu_ticks "$3")
	out=$("$work/relaybench" -mode turn -server "$host:$2" -transport "$4" -bytes "$bytes" -time "$dur" -runs 1)
	c1=$(cpu_ticks "$3")
	echo "$((c1 - c0)) $out" >>"$work/$1.$4"
}

# turn_summary prints one JSON line from a server's runs: the best run's
# figures, and the server's median CPU time per relayed Mbit.
turn_summary() { # server transport
	python3 - "$hz" "${dur%s}" "$work/$1.$2" <<'PY'
import json, statistics, sys
hz, dur = float(sys.argv[1]), float(sys.argv[2])
runs = [(int(l.split(" ", 1)[0]), json.loads(l.split(" ", 1)[1])) for l in open(sys.argv[3]) if l.strip()]
best = max(runs, key=lambda r: r[1]["throughput_mbps"])[1]
per = [t / hz * 1000 / (r["throughput_mbps"] * dur) for t, r in runs if r["throughput_mbps"] > 0]
best["cpu_ms_per_mbit"] = round(statistics.median(per), 2) if per else 0
print(json.dumps(best))
PY
}

printf '%-10s %-8s %10s %10s %12s %8s %12s\n' transport server rtt_ms p95_ms mbit_s lost_% cpu_ms/Mbit
for tr in udp tcp; do
	# The servers take turns run by run, so load from elsewhere on the
	# machine falls on both alike.
	for _ in $(seq "$runs"); do
		turn_once natlab "$np" "$natlab_pid" "$tr"
		turn_once coturn "$cp" "$coturn_pid" "$tr"
	done
	declare -A thr=()
	for who in natlab coturn; do
		out=$(turn_summary "$who" "$tr")
		thr[$who]=$(field "$out" throughput_mbps)
		printf '%-10s %-8s %10s %10s %12s %8s %12s\n' "$tr" "$who" "$(field "$out" rtt_median_ms)" "$(field "$out" rtt_p95_ms)" "${thr[$who]}" "$(field "$out" lost_pct)" "$(field "$out" cpu_ms_per_mbit)"
	done
	echo "TURN over $tr: natlab/coturn throughput = $(ratio "${thr[natlab]}" "${thr[coturn]}") (goal >= 1.0)"
done

echo "# STUN: Binding requests, 8 sockets x 32 outstanding, $dur"
declare -A rps=()
for who in natlab coturn; do
	port=$np; [[ $who == coturn ]] && port=$cp
	out=$("$work/relaybench" -mode stun -server "$host:$port" -time "$dur")
	rps[$who]=$(field "$out" responses_per_s)
	printf '%-8s %12s responses/s\n' "$who" "${rps[$who]}"
done
echo "STUN: natlab/coturn responses per second = $(ratio "${rps[natlab]}" "${rps[coturn]}") (goal >= 1.0)"
