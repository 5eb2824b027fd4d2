// Command upstream is the minimal benchmark upstream: it answers every
// request with 200 and a small fixed body, on loopback only.
//
//	upstream [-listen 127.0.0.1:0] [-body-bytes 64] [-any-loopback -port P]
//
// It logs one JSON record {"msg":"listening","addr":...} to stderr once it
// accepts connections.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/stsauth/stsauth/hack/bench/internal/benchnet"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to listen on")
	anyLoopback := fs.Bool("any-loopback", false, "listen on 0.0.0.0:-port but serve loopback peers only, so all of 127.0.0.0/8 reaches it")
	port := fs.Int("port", 0, "port for -any-loopback; 0 picks one")
	bodyBytes := fs.Int("body-bytes", 64, "size of the response body, 0 to 1 MiB")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *bodyBytes < 0 || *bodyBytes > 1<<20 {
		fmt.Fprintf(stderr, "upstream: -body-bytes %d: want 0 to 1048576\n", *bodyBytes)
		return 2
	}
	var ln net.Listener
	var err error
	if *anyLoopback {
		ln, err = benchnet.ListenAnyLoopback(*port)
	} else {
		if err = benchnet.CheckLoopbackAddr(*listen); err != nil {
			fmt.Fprintln(stderr, "upstream: -listen:", err)
			return 2
		}
		ln, err = net.Listen("tcp", *listen)
	}
	if err != nil {
		fmt.Fprintln(stderr, "upstream: listen:", err)
		return 1
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	srv := benchnet.NewServer(benchnet.Upstream(*bodyBytes))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	select {
	case <-ctx.Done():
	case err := <-errc:
		log.Error("serve", "error", err.Error())
		return 1
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	return 0
}
