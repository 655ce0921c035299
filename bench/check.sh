#!/usr/bin/env bash
# bench/check.sh: time the default `natlab check` (STUN tests and the
# port-mapping probe) against the Debian STUN clients in the same run, and
# check that their verdicts agree.
#
#   bench/check.sh [RUNS]                 (default 20)
#   MODE=loopback bench/check.sh          (no NAT: one `natlab serve` on 127.0.0.1 + 127.0.0.2)
#   NATLAB=/path/to/natlab bench/check.sh (use a built binary)
#   PRESET=symmetric bench/check.sh       (the kernel lab's NAT, default port-restricted-cone)
#
# The default MODE=kernel runs every client on a host behind a real Linux
# NAT of a kernel lab (`natlab lab up`, root or CAP_NET_ADMIN), timed inside
# the host's namespace. The goal: natlab check <= 0.5x the stun client's
# time, with the same verdict.
#
# Needs: go, stun (Debian stun-client), turnutils_natdiscovery (coturn), jq.
set -euo pipefail

runs=${1:-20}
mode=${MODE:-kernel}
preset=${PRESET:-port-restricted-cone}
cd "$(dirname "$0")/.."

for prog in stun:stun-client turnutils_natdiscovery:coturn jq:jq; do
	if ! command -v "${prog%%:*}" >/dev/null; then
		echo "bench/check.sh: ${prog%%:*} not found (Debian package ${prog##*:})" >&2
		exit 1
	fi
done

work=$(mktemp -d)
server_pid=
lab=
cleanup() {
	if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
	if [[ -n $lab ]]; then "$work/natlab" lab down "$lab" >/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [[ -n ${NATLAB:-} ]]; then
	cp "$NATLAB" "$work/natlab"
else
	go build -o "$work/natlab" ./cmd/natlab
fi
chmod 755 "$work" # the lab's hosts run the binary from here

# on_host CMD...: runs CMD where the clients run (the lab host, or here).
case $mode in
kernel)
	lab=$("$work/natlab" lab up --kernel --nat-a "$preset" --nat-b "" --json | jq -r .name)
	server=203.0.113.10:3478
	port=3478
	host=203.0.113.10
	on_host() { "$work/natlab" lab exec "$lab" a -- "$@"; }
	echo "kernel lab $lab: host behind $preset, natlab serve at $server"
	;;
loopback)
	# A free port P with P+1 free as well, on both loopback addresses.
	port=$(python3 - <<'PY'
import socket
for _ in range(100):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p > 65000: continue
    ok = True
    for ip in ("127.0.0.1", "127.0.0.2"):
        for q in (p, p + 1):
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                t = socket.socket(socket.AF_INET, kind)
                try: t.bind((ip, q))
                except OSError: ok = False
                t.close()
    if ok:
        print(p); break
PY
)
	host=127.0.0.1
	server=$host:$port
	"$work/natlab" serve --listen "$server" --alt-ip 127.0.0.2 --alt-port $((port + 1)) --json >"$work/serve.json" 2>&1 &
	server_pid=$!
	for _ in $(seq 50); do [[ -s $work/serve.json ]] && break; sleep 0.1; done
	[[ -s $work/serve.json ]] || { echo "natlab serve did not start" >&2; exit 1; }
	on_host() { "$@"; }
	echo "loopback: natlab serve at $server"
	;;
*)
	echo "bench/check.sh: MODE must be kernel or loopback" >&2
	exit 2
	;;
esac

# time_runs CMD...: runs CMD $runs times on the host, prints the mean in
# ms. The loop runs inside the host, so entering the namespace is not timed.
time_runs() {
	# shellcheck disable=SC2016
	on_host bash -c '
		runs=$1; shift; total=0
		for _ in $(seq "$runs"); do
			t0=$(date +%s%N)
			"$@" >/dev/null 2>&1 || true # the stun client exits with its NAT type code
			t1=$(date +%s%N)
			total=$((total + t1 - t0))
		done
		awk -v t="$total" -v n="$runs" "BEGIN { printf \"%.1f\n\", t / n / 1e6 }"' _ "$runs" "$@"
}

natlab_ms=$(time_runs "$work/natlab" check --server "$server")
natlab_nopm_ms=$(time_runs "$work/natlab" check --portmap=false --server "$server")
natdisc_ms=$(time_runs turnutils_natdiscovery -m -f -p "$port" "$host")
stun_ms=$(time_runs stun "$server")

# Verdicts, and natlab's own account of its time.
json=$(on_host "$work/natlab" check --json --server "$server")
nl_type=$(jq -r .profile.nat_type <<<"$json")
nl_map=$(jq -r '.profile.mapping // ""' <<<"$json")
nl_filt=$(jq -r '.profile.filtering // ""' <<<"$json")
nl_dur=$(jq -r .profile.duration_ms <<<"$json")
pm_dur=$(jq -r '.port_mapping.duration_ms // 0' <<<"$json")
pm_sum=$(jq -r '[.port_mapping.protocols[]? | "\(.protocol): \(.error // "available")"] | join("; ")' <<<"$json")
nd_out=$(on_host turnutils_natdiscovery -m -f -p "$port" "$host" 2>&1 || true)
to_behaviour() {
	case "$1" in
	"Endpoint Independent") echo endpoint-independent ;;
	"Address Dependent") echo address-dependent ;;
	"Address and Port Dependent") echo address-and-port-dependent ;;
	*) echo "?" ;;
	esac
}
nd_map=$(to_behaviour "$(sed -n 's/.*NAT with \(.*\) Mapping!.*/\1/p' <<<"$nd_out" | head -1)")
nd_filt=$(to_behaviour "$(sed -n 's/.*NAT with \(.*\) Filtering!.*/\1/p' <<<"$nd_out" | head -1)")
st_out=$(on_host stun "$server" 2>&1 || true)
st_type=$(sed -n 's/^Primary: \([^	]*\).*/\1/p' <<<"$st_out" | head -1)

printf '\n%-34s %10s\n' "client ($runs runs, $mode)" "mean ms"
printf '%-34s %10s\n' "natlab check (default)" "$natlab_ms" \
	"natlab check --portmap=false" "$natlab_nopm_ms" \
	"turnutils_natdiscovery -m -f" "$natdisc_ms" \
	"stun (stun-client)" "$stun_ms"
awk -v a="$natlab_ms" -v s="$stun_ms" -v d="$natdisc_ms" 'BEGIN {
	printf "\nnatlab/stun          %.3f  (goal <= 0.5)\nnatlab/natdiscovery  %.3f\n", a / s, a / d }'
printf 'natlab duration_ms %s (port-mapping probe %s ms, beside the STUN tests: %s)\n' "$nl_dur" "$pm_dur" "$pm_sum"

printf '\nverdicts: natlab %s (mapping %s, filtering %s); natdiscovery mapping %s, filtering %s; stun %s\n' \
	"$nl_type" "$nl_map" "$nl_filt" "$nd_map" "$nd_filt" "$st_type"
fail=0
[[ $nl_map == "$nd_map" && $nl_filt == "$nd_filt" ]] || { echo "DISAGREE: natlab vs natdiscovery"; fail=1; }
case "$nl_type/$st_type" in
open/Open | full-cone/"Independent Mapping, Independent Filter"* | \
	restricted-cone/"Independent Mapping, Address Dependent Filter"* | \
	port-restricted-cone/"Independent Mapping, Port Dependent Filter"* | \
	symmetric/"Dependent Mapping"*) ;;
*) echo "DISAGREE: natlab $nl_type vs stun $st_type"; fail=1 ;;
esac
awk -v a="$natlab_ms" -v s="$stun_ms" 'BEGIN { exit !(a <= 0.5 * s) }' || { echo "SLOW: natlab exceeds 0.5x the stun client's time"; fail=1; }
[[ $fail == 0 ]] && echo "agree: yes"
exit $fail
