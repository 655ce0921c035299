#!/usr/bin/env bash
# bench/check.sh: time `natlab check` against the Debian STUN clients, all
# against one `natlab serve` on loopback (127.0.0.1 + 127.0.0.2), and check
# that their verdicts agree.
#
#   bench/check.sh [RUNS]        (default 20)
#   NATLAB=/path/to/natlab bench/check.sh   (use a built binary)
#
# Needs: go, stun (Debian stun-client), turnutils_natdiscovery (coturn).
set -euo pipefail

runs=${1:-20}
cd "$(dirname "$0")/.."

for prog in stun:stun-client turnutils_natdiscovery:coturn; do
	if ! command -v "${prog%%:*}" >/dev/null; then
		echo "bench/check.sh: ${prog%%:*} not found (Debian package ${prog##*:})" >&2
		exit 1
	fi
done

work=$(mktemp -d)
server_pid=
cleanup() {
	if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [[ -n ${NATLAB:-} ]]; then
	cp "$NATLAB" "$work/natlab"
else
	go build -o "$work/natlab" ./cmd/natlab
fi

# A free port P with P+1 free as well, on both loopback addresses.
free_port() {
	python3 - <<'PY'
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
}
port=$(free_port)
server=127.0.0.1:$port

"$work/natlab" serve --listen "$server" --alt-ip 127.0.0.2 --alt-port $((port + 1)) --json >"$work/serve.json" 2>&1 &
server_pid=$!
for _ in $(seq 50); do [[ -s $work/serve.json ]] && break; sleep 0.1; done
[[ -s $work/serve.json ]] || { echo "natlab serve did not start" >&2; exit 1; }
echo "server: $(cat "$work/serve.json")"

now_ns() { date +%s%N; }

# time_runs NAME CMD...: runs CMD $runs times, prints the mean in ms.
time_runs() {
	local name=$1; shift
	local total=0 t0 t1
	for _ in $(seq "$runs"); do
		t0=$(now_ns)
		"$@" >/dev/null 2>&1 || true # the stun client exits with its NAT type code
		t1=$(now_ns)
		total=$((total + t1 - t0))
	done
	awk -v t="$total" -v n="$runs" 'BEGIN { printf "%.1f\n", t / n / 1e6 }'
}

# Equal work: the stun client and natdiscovery do not ask the gateway for a
# port mapping, so natlab's port-mapping probe (on by default, waiting up to
# 1.5 s for a gateway that does not answer) is timed separately.
natlab_ms=$(time_runs natlab "$work/natlab" check --portmap=false --server "$server")
natlab_pm_ms=$(time_runs natlab "$work/natlab" check --server "$server")
natdisc_ms=$(time_runs natdiscovery turnutils_natdiscovery -m -f -p "$port" 127.0.0.1)
stun_ms=$(time_runs stun stun "$server")

# Verdicts.
json=$("$work/natlab" check --portmap=false --json --server "$server")
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)["profile"][sys.argv[1]] or "")' "$1" <<<"$json"; }
nl_type=$(field nat_type); nl_map=$(field mapping); nl_filt=$(field filtering)
nd_out=$(turnutils_natdiscovery -m -f -p "$port" 127.0.0.1 2>&1)
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
st_out=$(stun "$server" 2>&1 || true)
st_type=$(sed -n 's/^Primary: \([^	]*\).*/\1/p' <<<"$st_out" | head -1)

printf '\n%-22s %10s\n' "client ($runs runs)" "mean ms"
printf '%-22s %10s\n' "natlab check" "$natlab_ms" "turnutils_natdiscovery" "$natdisc_ms" "stun (stun-client)" "$stun_ms"
printf '%-22s %10s  (with the port-mapping probe, natlab check'"'"'s default)\n' "natlab check --portmap" "$natlab_pm_ms"
awk -v a="$natlab_ms" -v s="$stun_ms" -v d="$natdisc_ms" 'BEGIN {
	printf "\nnatlab/stun          %.3f  (goal <= 0.5)\nnatlab/natdiscovery  %.3f\n", a / s, a / d }'

printf '\nverdicts: natlab %s (mapping %s, filtering %s); natdiscovery mapping %s, filtering %s; stun %s\n' \
	"$nl_type" "$nl_map" "$nl_filt" "$nd_map" "$nd_filt" "$st_type"
fail=0
[[ $nl_map == "$nd_map" && $nl_filt == "$nd_filt" ]] || { echo "DISAGREE: natlab vs natdiscovery"; fail=1; }
case "$nl_type/$st_type" in
open/Open | full-cone/"Independent Mapping, Independent Filter"*) ;;
*) echo "DISAGREE: natlab $nl_type vs stun $st_type"; fail=1 ;;
esac
awk -v a="$natlab_ms" -v s="$stun_ms" 'BEGIN { exit !(a <= 0.5 * s) }' || { echo "SLOW: natlab exceeds 0.5x the stun client's time"; fail=1; }
[[ $fail == 0 ]] && echo "agree: yes"
exit $fail
