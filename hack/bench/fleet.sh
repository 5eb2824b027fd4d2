#!/usr/bin/env bash
# The fleet scenario of BENCHMARKS.md ("A fleet against a throttled STS"):
# 1000 token sources x 10 audience sets against ststest throttled at 50
# calls/s, on a fake clock, about a minute of wall time. Writes the plot to
# hack/bench/fleet.svg. Extra arguments go to the benchmark, for example
# -fleet.sources 100 -fleet.rate 20.
set -euo pipefail
cd "$(dirname "$0")/../.."
go test -run '^$' -bench '^BenchmarkFleet$' -benchtime 1x -timeout 30m . \
	-fleet -fleet.svg hack/bench/fleet.svg "$@"
