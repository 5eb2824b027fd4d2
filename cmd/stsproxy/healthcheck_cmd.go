package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// healthcheckTimeout bounds the whole check, so a wedged process fails the
// check instead of hanging the container runtime's probe.
const healthcheckTimeout = 5 * time.Second

// healthcheckCommand is "stsproxy healthcheck". It reads the admin
// listener's flags (and so their env vars, which a container shares with the
// proxy) and nothing else.
var healthcheckCommand = &command{
	name:     "stsproxy healthcheck",
	synopsis: "stsproxy healthcheck [--metrics-listen-addr ADDR]",
	summary:  "ask a running proxy's admin listener for /healthz, for container health checks",
	about: "Asks the admin listener of a running proxy (--metrics-listen-addr; a wildcard host is reached on loopback) " +
		"for /healthz and exits 0 on 200 OK, else 1: a container health check that needs no shell or curl. " +
		"It reads the proxy's environment variables for these flags, so it runs in the proxy's container unchanged.",
	flags: []string{"metrics-listen-addr", "metrics-enabled"},
	usage: map[string]string{
		"metrics-listen-addr": "admin listener of the proxy to ask, host:port",
		"metrics-enabled":     "whether the proxy serves its admin listener; false fails the check, as there is no /healthz to ask",
	},
}

// runHealthcheck implements "stsproxy healthcheck": it asks the running
// proxy's admin listener for /healthz and exits 0 on 200 OK, 1 otherwise. It
// needs no shell or curl, so a distroless image's HEALTHCHECK can run it.
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, code := loadConfig(healthcheckCommand, args, getenv, stdout, stderr)
	if cfg == nil {
		return code
	}
	if !cfg.metricsEnabled {
		return healthcheckCommand.fail(stderr, 1, "--metrics-enabled/METRICS_ENABLED is false, so the proxy serves no /healthz")
	}
	u, err := healthzURL(cfg.metricsListenAddr)
	if err != nil {
		return healthcheckCommand.fail(stderr, 1, "%v", err)
	}
	if err := checkHealth(ctx, u); err != nil {
		return healthcheckCommand.fail(stderr, 1, "%v", err)
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

// healthzURL returns the /healthz URL on the admin listener address: a
// wildcard host (empty, 0.0.0.0 or ::) is reached on loopback.
func healthzURL(listenAddr string) (string, error) {
	host, port, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return "", fmt.Errorf("--metrics-listen-addr %q: %v", listenAddr, err)
	}
	if port == "0" {
		return "", fmt.Errorf("--metrics-listen-addr %q has port 0: the check needs the port the proxy listens on", listenAddr)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz", nil
}

// checkHealth GETs u directly (never through HTTP_PROXY) and wants 200 OK
// from u itself: a redirect is an answer of its own, never followed, so
// whatever answers on the admin port cannot send the check elsewhere.
func checkHealth(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	noRedirects := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := (&http.Client{Transport: tr, CheckRedirect: noRedirects}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}
