#!/usr/bin/env bash
# Benchmarks and fault scenarios for stsproxy, on loopback only.
#
#   hack/bench/run.sh s1|compare|inbound|s5|profile|cold|slow-refresh|outage-refresh|outage-hard|dynamic|all
#
# s1 (same as compare): throughput and p99 of stsproxy and stsproxy inbound
#   against the floor, interleaved; prints the ratios (issue 19).
# s5: the dynamic scenario with 5000 distinct hosts routed by header;
#   prints the proxy's RSS growth against the 15 MiB bound (issue 19), and
#   the floor's (floorproxy routing by the same header) over the same load.
# profile: CPU and allocation profiles of stsproxy under the s1 load, and
#   its heap profile after s5, from a binary built with -tags stsproxy_pprof;
#   prints the top entries and keeps the profiles in BENCH_PROFILE_DIR.
#
# compare: interleaved rounds (A B C D A B C D ...) of a closed-loop load
#   A direct to a minimal upstream, B through floorproxy (a bare ReverseProxy
#   that sets a constant bearer header), C through stsproxy --local-sts with
#   its token cached, D through stsproxy inbound verifying one reused token;
#   prints a markdown table and the stsproxy/floor and inbound/floor ratios.
# inbound: the same rounds with "stsproxy inbound" in place of stsproxy, in
#   front of the same upstream, every request carrying one reused token from
#   an emulator (hack/bench/scenarios serve-sts); prints inbound/floor ratios.
# the others: fault scenarios driven by hack/bench/scenarios, which runs
#   the ststest emulator in process and starts the stsproxy binary against it.
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS [3]  BENCH_DURATION [5s]  BENCH_CONNS [32]
#   BENCH_STSPROXY_FLAGS [] extra stsproxy flags in compare and inbound, e.g. "--log-level warn"
#   BENCH_OUT []      directory to keep the raw loadtest JSON in
#   BENCH_INBOUND_B_FLAGS [] with inbound: also run a second stsproxy inbound,
#                     "inbound-b", with these extra flags (e.g. "--access-log=false")
#   SCENARIO_FLAGS [] extra flags for hack/bench/scenarios (e.g. -dynamic-n 20000)
#   BENCH_DYNAMIC_N_ALL [30000] dynamic requests in "all" ("dynamic" alone: 100000)
#   BENCH_PROFILE_DIR [/tmp/stsbench-profiles] where "profile" writes cpu.pb.gz,
#     allocs.pb.gz (allocations during the load only) and heap.pb.gz
set -euo pipefail

usage() {
	echo "usage: $0 s1|compare|inbound|s5|profile|cold|slow-refresh|outage-refresh|outage-hard|dynamic|all" >&2
	exit 2
}
[[ $# -eq 1 ]] || usage
cmd=$1
case $cmd in
s1 | compare | inbound | s5 | profile | cold | slow-refresh | outage-refresh | outage-hard | dynamic | all) ;;
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
		if [[ $cmd == profile ]]; then
			go build -tags stsproxy_pprof -o "$BIN/stsproxy-pprof" ./cmd/stsproxy
		fi
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

# start_floors UPSTREAM: start floor and floor-pooled in front of UPSTREAM;
# sets FLOOR and POOLED to their addresses.
start_floors() {
	# The floor keeps as many idle upstream connections as stsproxy does
	# (cmd/stsproxy maxIdleConnsPerHost), so only the header work differs.
	start floor "$BIN/floorproxy" -listen 127.0.0.1:0 -upstream "http://$1" -max-idle-conns-per-host 64
	FLOOR=$(listen_attr floor addr)
	# floor-pooled also copies bodies through pooled buffers, as stsproxy
	# does: the like-for-like floor.
	start floor-pooled "$BIN/floorproxy" -listen 127.0.0.1:0 -upstream "http://$1" -max-idle-conns-per-host 64 -buffer-pool
	POOLED=$(listen_attr floor-pooled addr)
	wait_ok "http://$FLOOR/"
}

# start_stsproxy UPSTREAM [ENV...]: start stsproxy --local-sts in front of
# UPSTREAM with its token cached; sets STS and STS_METRICS.
start_stsproxy() {
	local up=$1
	shift
	# shellcheck disable=SC2086 # BENCH_STSPROXY_FLAGS is a list of flags
	start stsproxy env "$@" "${STSPROXY_BIN:-$BIN/stsproxy}" --listen-addr 127.0.0.1:0 --metrics-listen-addr 127.0.0.1:0 \
		--upstream-host "$up" --upstream-scheme http --token-audience https://api.example.com --local-sts \
		${BENCH_STSPROXY_FLAGS:-}
	STS=$(listen_attr stsproxy addr)
	STS_METRICS=$(listen_attr stsproxy metrics_addr)
	wait_ok "http://$STS_METRICS/readyz" # token fetched
	wait_ok "http://$STS/"
}

# start_inbound UPSTREAM: start an emulator and stsproxy inbound in front of
# UPSTREAM; sets IN and AUTH (the header carrying one token from the
# emulator, which is never logged).
start_inbound() {
	local up=$1
	start sts "$BIN/scenarios" serve-sts -token-file "$WORK/token" -audience https://api.example.com
	local sts
	sts=$(listen_attr sts addr)
	# shellcheck disable=SC2086 # BENCH_STSPROXY_FLAGS is a list of flags
	start inbound "$BIN/stsproxy" inbound --listen-addr 127.0.0.1:0 --metrics-listen-addr 127.0.0.1:0 \
		--upstream "http://$up" --issuer "http://$sts" --allow-insecure-issuer --audience https://api.example.com \
		${BENCH_STSPROXY_FLAGS:-}
	IN=$(listen_attr inbound addr)
	local metrics
	metrics=$(listen_attr inbound metrics_addr)
	INB=
	if [[ -n ${BENCH_INBOUND_B_FLAGS:-} ]]; then
		# shellcheck disable=SC2086 # flag lists
		start inbound-b "$BIN/stsproxy" inbound --listen-addr 127.0.0.1:0 --metrics-listen-addr 127.0.0.1:0 \
			--upstream "http://$up" --issuer "http://$sts" --allow-insecure-issuer --audience https://api.example.com \
			${BENCH_STSPROXY_FLAGS:-} $BENCH_INBOUND_B_FLAGS
		INB=$(listen_attr inbound-b addr)
		wait_ok "http://$(listen_attr inbound-b metrics_addr)/readyz"
	fi
	wait_ok "http://$metrics/readyz" # issuer keys fetched
	AUTH="Authorization: Bearer $(cat "$WORK/token")"
	curl --noproxy '*' -sf -o /dev/null -H "$AUTH" "http://$IN/" || {
		log "the token does not pass stsproxy inbound; log:"
		cat "$WORK/inbound.log" >&2
		return 1
	}
}

stop_all() {
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	PIDS=()
}

# rounds REPORT TARGET...: warm each target up, run the interleaved rounds
# and print the report. Every target gets the same request, with the
# inbound token header (which the others ignore).
rounds() {
	local report=$1
	shift
	local res=${BENCH_OUT:-$WORK/results}
	mkdir -p "$res"
	log "warming up each target (1 s)"
	for t in "$@"; do
		loadtest -url "${URL[$t]}" -H "$AUTH" -c "$CONNS" -d 1s >/dev/null
	done
	for r in $(seq "$ROUNDS"); do
		for t in "$@"; do
			log "round $r/$ROUNDS: $t for $DURATION with $CONNS connections"
			loadtest -url "${URL[$t]}" -H "$AUTH" -c "$CONNS" -d "$DURATION" -json >"$res/$t-$r.json"
		done
	done
	"$BIN/scenarios" "$report" "$res"
	echo
	echo "Load average at end (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)$(busy_note)"
	echo
}

declare -A URL

compare() {
	header compare
	start upstream "$BIN/upstream" -listen 127.0.0.1:0
	local up
	up=$(listen_attr upstream addr)
	wait_ok "http://$up/"
	start_floors "$up"
	start_stsproxy "$up"
	start_inbound "$up"
	URL=([direct]="http://$up/bench" [floor]="http://$FLOOR/bench" [floor-pooled]="http://$POOLED/bench" [stsproxy]="http://$STS/bench" [inbound]="http://$IN/bench")
	rounds report-compare direct floor floor-pooled stsproxy inbound
	echo "Each round: \`loadtest -url <target>/bench -H 'Authorization: Bearer <one ES384 token>' -c $CONNS -d $DURATION -json\`; stsproxy: \`stsproxy --local-sts --token-audience https://api.example.com --upstream-host <upstream> --upstream-scheme http\`; inbound: \`stsproxy inbound --upstream http://<upstream> --issuer <emulator> --allow-insecure-issuer --audience https://api.example.com\` (defaults otherwise: access log, metrics, the verified-token cache); floor: \`floorproxy -max-idle-conns-per-host 64\` (a bare ReverseProxy setting a constant 900-byte bearer header, the same transport settings as stsproxy); floor-pooled: the same with \`-buffer-pool\` (copy buffers from a sync.Pool, as stsproxy has)."
	# Stop this run's servers before any scenario starts its own.
	stop_all
}

inbound() {
	header inbound
	start upstream "$BIN/upstream" -listen 127.0.0.1:0
	local up
	up=$(listen_attr upstream addr)
	wait_ok "http://$up/"
	start_floors "$up"
	start_inbound "$up"
	URL=([direct]="http://$up/bench" [floor]="http://$FLOOR/bench" [floor-pooled]="http://$POOLED/bench" [inbound]="http://$IN/bench")
	local order=(direct floor floor-pooled inbound)
	if [[ -n $INB ]]; then
		URL[inbound-b]="http://$INB/bench"
		order+=(inbound-b)
	fi
	rounds report-inbound "${order[@]}"
	echo "Each round: \`loadtest -url <target>/bench -H 'Authorization: Bearer <one ES384 token>' -c $CONNS -d $DURATION -json\`; inbound: \`stsproxy inbound --upstream http://<upstream> --issuer <emulator> --allow-insecure-issuer --audience https://api.example.com\` (defaults otherwise: access log, metrics, the verified-token cache); floor and floor-pooled as in compare."
	stop_all
}

# pprof_top FILE [FLAG...]: the top 25 entries of a profile.
pprof_top() {
	local f=$1
	shift
	echo
	echo "\`go tool pprof -top -nodecount 25 $* $f\`:"
	echo
	echo '```'
	go tool pprof -top -nodecount 25 "$@" "$f" 2>/dev/null
	echo '```'
}

profile() {
	local dir=${BENCH_PROFILE_DIR:-/tmp/stsbench-profiles}
	mkdir -p "$dir"
	header profile
	start upstream "$BIN/upstream" -listen 127.0.0.1:0
	local up
	up=$(listen_attr upstream addr)
	wait_ok "http://$up/"
	STSPROXY_BIN=$BIN/stsproxy-pprof start_stsproxy "$up" STSPROXY_PPROF_ADDR=127.0.0.1:0
	local pp
	pp=$(grep -m1 '"msg":"pprof listening"' "$WORK/stsproxy.log" | jq -r .addr)
	log "warming up stsproxy (1 s)"
	loadtest -url "http://$STS/bench" -c "$CONNS" -d 1s >/dev/null
	local secs=${DURATION%s}
	curl --noproxy '*' -sf -o "$dir/allocs-before.pb.gz" "http://$pp/debug/pprof/allocs"
	curl --noproxy '*' -sf -o "$dir/cpu.pb.gz" "http://$pp/debug/pprof/profile?seconds=$((secs - 1))" &
	local curlpid=$!
	log "profiling stsproxy for $DURATION under $CONNS connections"
	loadtest -url "http://$STS/bench" -c "$CONNS" -d "$DURATION" | tail -n 3
	wait "$curlpid"
	curl --noproxy '*' -sf -o "$dir/allocs-after.pb.gz" "http://$pp/debug/pprof/allocs"
	stop_all
	pprof_top "$dir/cpu.pb.gz"
	pprof_top "$dir/allocs-after.pb.gz" -sample_index=alloc_space -diff_base "$dir/allocs-before.pb.gz"
	pprof_top "$dir/allocs-after.pb.gz" -sample_index=alloc_objects -diff_base "$dir/allocs-before.pb.gz"
	# shellcheck disable=SC2086 # SCENARIO_FLAGS is a list of flags
	"$BIN/scenarios" -stsproxy "$BIN/stsproxy-pprof" -c "$CONNS" -dynamic-n 5000 -pprof-dir "$dir" \
		-command "hack/bench/run.sh profile (the s5 scenario)" ${SCENARIO_FLAGS:-} dynamic
	pprof_top "$dir/heap.pb.gz" -sample_index=inuse_space
	echo
	echo "Profiles in $dir (cpu.pb.gz, allocs-before/after.pb.gz, heap.pb.gz)."
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
s1 | compare) compare ;;
inbound) inbound ;;
profile) profile ;;
s5) scenarios dynamic -dynamic-n 5000 -floor "$BIN/floorproxy" ;;
all)
	# 30,000 dynamic requests keep "all" under about 5 minutes on 2 CPUs;
	# "run.sh dynamic" sends 100,000.
	compare
	scenarios all -dynamic-n "${BENCH_DYNAMIC_N_ALL:-30000}"
	;;
*) scenarios "$cmd" ;;
esac
