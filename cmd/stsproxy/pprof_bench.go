//go:build stsproxy_pprof

package main

// This file is built only with -tags stsproxy_pprof, by hack/bench/run.sh
// profile and hack/bench/scenarios -pprof: the shipped binary has no
// profiling endpoint.

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
)

// init serves net/http/pprof on STSPROXY_PPROF_ADDR, a loopback address
// (127.0.0.1:0 picks a port), and prints {"msg":"pprof listening","addr":...}
// to stderr for the bench harness to read. STSPROXY_PPROF_MEMPROFILERATE,
// if set, replaces runtime.MemProfileRate (512 KiB): 4096 makes a heap
// profile of a small proxy exact enough to attribute megabytes, but costs
// CPU on every allocation, so it is not for CPU profiles.
func init() {
	addr := os.Getenv("STSPROXY_PPROF_ADDR")
	if addr == "" {
		return
	}
	if r, err := strconv.Atoi(os.Getenv("STSPROXY_PPROF_MEMPROFILERATE")); err == nil && r > 0 {
		runtime.MemProfileRate = r
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil && !ln.Addr().(*net.TCPAddr).IP.IsLoopback() {
		ln.Close()
		err = fmt.Errorf("%s is not a loopback address", addr)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "stsproxy: STSPROXY_PPROF_ADDR: %v\n", err)
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	fmt.Fprintf(os.Stderr, "{\"msg\":\"pprof listening\",\"addr\":%q}\n", ln.Addr().String())
	go http.Serve(ln, mux)
}
