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
)

// init serves net/http/pprof on STSPROXY_PPROF_ADDR, a loopback address
// (127.0.0.1:0 picks a port), and prints {"msg":"pprof listening","addr":...}
// to stderr for the bench harness to read. It samples one allocation per
// 4 KiB instead of 512 KiB, so a heap profile of a small proxy is exact
// enough to attribute megabytes.
func init() {
	addr := os.Getenv("STSPROXY_PPROF_ADDR")
	if addr == "" {
		return
	}
	runtime.MemProfileRate = 4096
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
