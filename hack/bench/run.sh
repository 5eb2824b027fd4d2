#!/usr/bin/env bash
# Benchmarks and fault scenarios for stsproxy, on loopback only.
#
#   hack/bench/run.sh compare|inbound|cold|slow-refresh|outage-refresh|outage-hard|dynamic|all
#
# compare: interleaved rounds (A B C A B C ...) of a closed-loop load
#   A direct to a minimal upstream, B through floorproxy (a bare ReverseProxy
#   that sets a constant bearer header), C through stsproxy --local-sts with
#   its token cached; prints a markdown table and stsproxy/floor ratios.
# inbound: the same rounds with "stsproxy inbound" in place of stsproxy, in
#   front of the same upstream, every request carrying one reused token from
#   an emulator (hack/bench/scenarios serve-sts); prints inbound/floor ratios.
# the others: fault scenarios driven by hack/bench/scenarios, which runs
#   the ststest emulator in process and starts the stsproxy binary against it.
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS [3]  BENCH_DURATION [5s]  BENCH_CONNS [32]
#   BENCH_STSPROXY_FLAGS [] extra stsproxy flags in compare and inbound, e.g. "--log-level warn"
#   BENCH_INBOUND_B_FLAGS [] with inbound: also run a second stsproxy inbound,
#                     "inbound-b", with these extra flags (e.g. "--access-log=false")
#   BENCH_OUT []      directory to keep the raw loadtest JSON in
#   SCENARIO_FLAGS [] extra flags for hack/bench/scenarios (e.g. -dynamic-n 20000)
#   BENCH_DYNAMIC_N_ALL [30000] dynamic requests in "all" ("dynamic" alone: 100000)
set -euo pipefail

usage() {
	echo "usage: $0 compare|inbound|cold|slow-refresh|outage-refresh|outage-hard|dynamic|all" >&2
	exit 2
}
[[ $# -eq 1 ]] || usage
cmd=$1
case $cmd in
compare | inbound | cold | slow-refresh | outage-refresh | outage-hard | dynamic | all) ;;
*) usage ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-5s}
CONNS=${BENCH_CONNS:-32}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/stsbench.XXXXXX")
BIN=$WORK/bin
PIDS=()

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		# Bounded wait: SIGKILL whatever is still there after 10 s.
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "run.sh: $*" >&2; }

build() {
	log "building into $BIN"
	mkdir -p "$BIN"
	(
		cd "$ROOT"
		go build -o "$BIN/stsproxy" ./cmd/stsproxy
		go build -o "$BIN/loadtest" ./hack/loadtest
		go build -o "$BIN/floorproxy" ./hack/floorproxy
		go build -o "$BIN/upstream" ./hack/bench/upstream
		go build -o "$BIN/scenarios" ./hack/bench/scenarios
	)
}

# start NAME CMD...: start CMD in the background with a clean environment,
# logging to $WORK/NAME.log.
start() {
	local name=$1
	shift
	env -i PATH="$PATH" HOME="$WORK" AWS_EC2_METADATA_DISABLED=true \
		AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
		"$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
}

# listen_attr NAME ATTR: wait (at most 15 s) for the JSON "listening" record
# in NAME's log and print its ATTR.
listen_attr() {
	local name=$1 attr=$2 v
	for _ in $(seq 150); do
		v=$(grep -m1 '"msg":"listening"' "$WORK/$name.log" 2>/dev/null | jq -r ".$attr // empty" || true)
		if [[ -n $v ]]; then
			case $v in
			127.* | "[::1]:"*) echo "$v" && return 0 ;;
			*) log "$name listens on non-loopback $v" && return 1 ;;
			esac
		fi
		sleep 0.1
	done
	log "$name did not start; log:"
	cat "$WORK/$name.log" >&2
	return 1
}

# wait_ok URL [HEADER]: poll (at most 15 s) until URL answers 2xx.
wait_ok() {
	for _ in $(seq 150); do
		if curl --noproxy '*' -sf -o /dev/null --max-time 1 "$1"; then
			return 0
		fi
		sleep 0.1
	done
	log "$1 did not answer 2xx within 15 s"
	return 1
}

loadtest() { "$BIN/loadtest" "$@"; }

# busy_note prints a warning when the 1-minute load average exceeds the CPU
# count: other work on the machine then skews every number here.
busy_note() {
	awk -v n="$(nproc)" '$1 > n { printf " (WARNING: busier than nproc; numbers are noisy)" }' /proc/loadavg
}

header() {
	echo "## stsproxy bench: $1"
	echo
	echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "- commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "- nproc: $(nproc), $(go version | cut -d' ' -f3-), $(uname -sr)"
	echo "- load average at start (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)$(busy_note)"
	echo "- command: hack/bench/run.sh $cmd (BENCH_ROUNDS=$ROUNDS BENCH_DURATION=$DURATION BENCH_CONNS=$CONNS BENCH_STSPROXY_FLAGS='${BENCH_STSPROXY_FLAGS:-}'${BENCH_INBOUND_B_FLAGS:+ BENCH_INBOUND_B_FLAGS='$BENCH_INBOUND_B_FLAGS'})"
}

compare() {
	header compare
	start upstream "$BIN/upstream" -listen 127.0.0.1:0
	local up
	up=$(listen_attr upstream addr)
	# The floor keeps as many idle upstream connections as stsproxy does
	# (cmd/stsproxy maxIdleConnsPerHost), so only the header work differs.
	start floor "$BIN/floorproxy" -listen 127.0.0.1:0 -upstream "http://$up" -max-idle-conns-per-host 64
	local floor
	floor=$(listen_attr floor addr)
	# floor-pooled also copies bodies through pooled buffers, as stsproxy
	# does: the like-for-like floor.
	start floor-pooled "$BIN/floorproxy" -listen 127.0.0.1:0 -upstream "http://$up" -max-idle-conns-per-host 64 -buffer-pool
	local pooled
	pooled=$(listen_attr floor-pooled addr)
	# shellcheck disable=SC2086 # BENCH_STSPROXY_FLAGS is a list of flags
	start stsproxy "$BIN/stsproxy" --listen-addr 127.0.0.1:0 --metrics-listen-addr 127.0.0.1:0 \
		--upstream-host "$up" --upstream-scheme http --token-audience https://api.example.com --local-sts \
		${BENCH_STSPROXY_FLAGS:-}
	local sts metrics
	sts=$(listen_attr stsproxy addr)
	metrics=$(listen_attr stsproxy metrics_addr)
	wait_ok "http://$up/"
	wait_ok "http://$floor/"
	wait_ok "http://$metrics/readyz" # token fetched
	wait_ok "http://$sts/"

	local -A url=([direct]="http://$up/bench" [floor]="http://$floor/bench" [floor-pooled]="http://$pooled/bench" [stsproxy]="http://$sts/bench")
	local order=(direct floor floor-pooled stsproxy)
	local res=${BENCH_OUT:-$WORK/results}
	mkdir -p "$res"
	log "warming up each target (1 s)"
	for t in "${order[@]}"; do
		loadtest -url "${url[$t]}" -c "$CONNS" -d 1s >/dev/null
	done
	for r in $(seq "$ROUNDS"); do
		for t in "${order[@]}"; do
			log "round $r/$ROUNDS: $t for $DURATION with $CONNS connections"
			loadtest -url "${url[$t]}" -c "$CONNS" -d "$DURATION" -json >"$res/$t-$r.json"
		done
	done
	"$BIN/scenarios" report-compare "$res"
	echo
	echo "Load average at end (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)$(busy_note)"
	echo
	echo "Each round: \`loadtest -url <target>/bench -c $CONNS -d $DURATION -json\`; stsproxy: \`stsproxy --local-sts --token-audience https://api.example.com --upstream-host <upstream> --upstream-scheme http\`; floor: \`floorproxy -max-idle-conns-per-host 64\` (a bare ReverseProxy setting a constant 900-byte bearer header, the same transport settings as stsproxy); floor-pooled: the same with \`-buffer-pool\` (copy buffers from a sync.Pool, as stsproxy has)."
	# Stop this run's servers before any scenario starts its own.
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	PIDS=()
}

inbound() {
	header inbound
	start upstream "$BIN/upstream" -listen 127.0.0.1:0
	local up
	up=$(listen_attr upstream addr)
	start floor "$BIN/floorproxy" -listen 127.0.0.1:0 -upstream "http://$up" -max-idle-conns-per-host 64
	local floor
	floor=$(listen_attr floor addr)
	start floor-pooled "$BIN/floorproxy" -listen 127.0.0.1:0 -upstream "http://$up" -max-idle-conns-per-host 64 -buffer-pool
	local pooled
	pooled=$(listen_attr floor-pooled addr)
	# The emulator writes one token to a file; it is never logged.
	start sts "$BIN/scenarios" serve-sts -token-file "$WORK/token" -audience https://api.example.com
	local sts
	sts=$(listen_attr sts addr)
	# shellcheck disable=SC2086 # BENCH_STSPROXY_FLAGS is a list of flags
	start inbound "$BIN/stsproxy" inbound --listen-addr 127.0.0.1:0 --metrics-listen-addr 127.0.0.1:0 \
		--upstream "http://$up" --issuer "http://$sts" --allow-insecure-issuer --audience https://api.example.com \
		${BENCH_STSPROXY_FLAGS:-}
	local in metrics
	in=$(listen_attr inbound addr)
	metrics=$(listen_attr inbound metrics_addr)
	local order=(direct floor floor-pooled inbound)
	local -A url=([direct]="http://$up/bench" [floor]="http://$floor/bench" [floor-pooled]="http://$pooled/bench" [inbound]="http://$in/bench")
	if [[ -n ${BENCH_INBOUND_B_FLAGS:-} ]]; then
		# shellcheck disable=SC2086 # flag lists
		start inbound-b "$BIN/stsproxy" inbound --listen-addr 127.0.0.1:0 --metrics-listen-addr 127.0.0.1:0 \
			--upstream "http://$up" --issuer "http://$sts" --allow-insecure-issuer --audience https://api.example.com \
			${BENCH_STSPROXY_FLAGS:-} $BENCH_INBOUND_B_FLAGS
		local inb
		inb=$(listen_attr inbound-b addr)
		wait_ok "http://$(listen_attr inbound-b metrics_addr)/readyz"
		url[inbound-b]="http://$inb/bench"
		order+=(inbound-b)
	fi
	wait_ok "http://$up/"
	wait_ok "http://$floor/"
	wait_ok "http://$metrics/readyz" # issuer keys fetched
	local auth
	auth="Authorization: Bearer $(cat "$WORK/token")"
	curl --noproxy '*' -sf -o /dev/null -H "$auth" "http://$in/" || {
		log "the token does not pass stsproxy inbound; log:"
		cat "$WORK/inbound.log" >&2
		return 1
	}

	local res=${BENCH_OUT:-$WORK/results}
	mkdir -p "$res"
	log "warming up each target (1 s)"
	for t in "${order[@]}"; do
		loadtest -url "${url[$t]}" -H "$auth" -c "$CONNS" -d 1s >/dev/null
	done
	for r in $(seq "$ROUNDS"); do
		for t in "${order[@]}"; do
			log "round $r/$ROUNDS: $t for $DURATION with $CONNS connections"
			loadtest -url "${url[$t]}" -H "$auth" -c "$CONNS" -d "$DURATION" -json >"$res/$t-$r.json"
		done
	done
	"$BIN/scenarios" report-inbound "$res"
	echo
	echo "Load average at end (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)$(busy_note)"
	echo
	echo "Each round: \`loadtest -url <target>/bench -H 'Authorization: Bearer <one ES384 token>' -c $CONNS -d $DURATION -json\`; inbound: \`stsproxy inbound --upstream http://<upstream> --issuer <emulator> --allow-insecure-issuer --audience https://api.example.com\` (defaults otherwise: access log, metrics, the verified-token cache); floor and floor-pooled as in compare."
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	PIDS=()
}

# scenarios NAME [FLAG...]: run hack/bench/scenarios; SCENARIO_FLAGS come
# last, so they override the given flags.
scenarios() {
	local name=$1
	shift
	header "scenario $name"
	# shellcheck disable=SC2086 # SCENARIO_FLAGS is a list of flags
	"$BIN/scenarios" -stsproxy "$BIN/stsproxy" -c "$CONNS" \
		-command "hack/bench/run.sh $cmd (BENCH_CONNS=$CONNS flags: $* ${SCENARIO_FLAGS:-})" \
		"$@" ${SCENARIO_FLAGS:-} "$name"
}

build
case $cmd in
compare) compare ;;
inbound) inbound ;;
all)
	# 30,000 dynamic requests keep "all" under about 5 minutes on 2 CPUs;
	# "run.sh dynamic" sends 100,000.
	compare
	scenarios all -dynamic-n "${BENCH_DYNAMIC_N_ALL:-30000}"
	;;
*) scenarios "$cmd" ;;
esac
