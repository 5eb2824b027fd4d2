package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quickstartMarker precedes the README code block that
// TestQuickStartREADME runs verbatim.
const quickstartMarker = "<!-- quickstart-script:"

// readmeBlocks returns the README's fenced code blocks, and the one after
// quickstartMarker.
func readmeBlocks(t *testing.T) (all []string, script string) {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	var cur *strings.Builder
	marked, inBlock := false, false
	for line := range strings.Lines(string(readme)) {
		trimmed := strings.TrimSpace(line)
		switch {
		case !inBlock && strings.HasPrefix(trimmed, quickstartMarker):
			marked = true
		case !inBlock && strings.HasPrefix(trimmed, "```"):
			inBlock, cur = true, &strings.Builder{}
		case inBlock && trimmed == "```":
			inBlock = false
			all = append(all, cur.String())
			if marked {
				script, marked = cur.String(), false
			}
		case inBlock:
			cur.WriteString(line)
		}
	}
	require.NotEmpty(t, script, "README.md has no code block after %q", quickstartMarker)
	return all, script
}

// quickstartEnv returns an environment with the stsproxy binary on PATH as
// "stsproxy" (what the README's install step does) and the demo (proxy,
// admin listener and STS emulator) on free loopback ports, so concurrent test runs on one machine do not collide.
func quickstartEnv(t *testing.T) (env []string, addr, metricsAddr, stsAddr string) {
	t.Helper()
	bin, err := buildBinary()
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.Symlink(bin, filepath.Join(dir, "stsproxy")))
	addr, metricsAddr, stsAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	return []string{
		"PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"LISTEN_ADDR=" + addr,
		"METRICS_LISTEN_ADDR=" + metricsAddr,
		"STS_LISTEN_ADDR=" + stsAddr,
	}, addr, metricsAddr, stsAddr
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// startGroup starts cmd as the leader of a new process group, as a shell
// job or a terminal's foreground job is, so whatever it starts can be found
// (and, in the end, killed) by the group.
func startGroup(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	pgid := cmd.Process.Pid
	t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
}

// requireNothingLeft checks that no process of the group pgid is left, and
// that the addresses can be listened on again.
func requireNothingLeft(t *testing.T, pgid int, addrs ...string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			out, _ := exec.Command("ps", "-eo", "pid,pgid,args").CombinedOutput()
			t.Fatalf("processes of group %d are left behind:\n%s", pgid, out)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by the deadline
	}
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		require.NoError(t, err, "port %s is left behind", a)
		ln.Close()
	}
}

// TestQuickStartREADME runs the README's quick-start script block verbatim
// with bash, as a script would, with stsproxy on PATH (the install step) and
// the demo on free ports: LISTEN_ADDR and friends, and the emulator's
// default address in the block replaced by its free one. It checks what the
// commands print: the demo's banner, the request through the proxy, the
// identity the app received, the claims "stsproxy verify" printed for the
// token of "stsproxy demo token", never a whole token; and that no process
// or port is left behind.
func TestQuickStartREADME(t *testing.T) {
	t.Parallel()
	blocks, script := readmeBlocks(t)
	// The interactive quick start uses the same commands.
	assert.Contains(t, blocks, "stsproxy demo\n")
	assert.Contains(t, blocks, "stsproxy demo request\n")
	verifyLine := demoVerifyLine("http://"+defaultDemoSTSAddr, false) + "\n"
	require.Contains(t, script, strings.Replace(verifyLine, " -\n", " --audience "+defaultDemoAudience+" -\n", 1),
		"the script verifies a token from the demo's emulator")

	env, addr, metricsAddr, stsAddr := quickstartEnv(t)
	script = strings.ReplaceAll(script, defaultDemoSTSAddr, stsAddr)
	var stdout, stderr syncBuffer
	cmd := exec.Command("bash", "-c", "set -eo pipefail\n"+script)
	cmd.Env, cmd.Dir = env, t.TempDir()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	startGroup(t, cmd)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "script:\n%s\nstdout:\n%s\nstderr:\n%s", script, stdout.String(), stderr.String())
	case <-time.After(2 * waitTimeout):
		t.Fatalf("the quick start did not finish; stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	requireNothingLeft(t, cmd.Process.Pid, addr, metricsAddr, stsAddr)

	out := stdout.String()
	for _, want := range []string{
		"stsproxy demo is ready",
		"  proxy     http://" + addr + " (pinned to stsproxy inbound; token audience https://api.example.com)",
		"  STS       http://" + stsAddr + " (emulator",
		"  metrics   http://" + metricsAddr + "/metrics",
		"  stsproxy demo token --sts-listen-addr " + stsAddr + " | stsproxy verify --allow-insecure-issuer --issuer http://" + stsAddr + " -\n",
		"GET http://" + addr + "/hello: 200 OK",
		"The app received GET /hello through stsproxy (Via: 1.1 stsproxy-",
		"stsproxy inbound verified it with package verify",
		"  X-Aws-Account: 123456789012\n",
		"  X-Aws-Principal-Id: arn:aws:iam::123456789012:role/ststest\n",
		"  X-Aws-Issuer: http://127.0.0.1:",
		"No Authorization header: the token stopped at stsproxy inbound",
		"stsproxy demo: stopped",
	} {
		assert.Contains(t, out, want)
	}
	// stsproxy verify printed the token's claims, as indented JSON.
	for _, want := range []string{`"iss": "http://` + stsAddr + `"`, `"aud": "https://api.example.com"`, `"https://sts.amazonaws.com/": {`} {
		assert.Contains(t, out, want)
	}
	for _, s := range []string{out, stderr.String()} {
		assert.Empty(t, jwtPattern.FindAllString(s, -1), "a whole JWT was printed")
	}
}

// bannerCurl finds the curl command in the demo's banner.
var bannerCurl = regexp.MustCompile(`(?m)^  (curl .*)$`)

// TestQuickStartInteractive runs the demo as a terminal's foreground job:
// it runs the curl the banner prints (which the README shows for the
// default address), then stops the demo with Ctrl-C's SIGINT to the job's
// process group, and checks nothing is left behind.
func TestQuickStartInteractive(t *testing.T) {
	t.Parallel()
	blocks, _ := readmeBlocks(t)
	readme := strings.Join(blocks, "")
	assert.Contains(t, readme, demoCurl(defaultDemoAddr)+"\n", "the README's curl is not the one the demo prints")

	env, addr, metricsAddr, _ := quickstartEnv(t)
	bin, err := buildBinary()
	require.NoError(t, err)
	var stdout, stderr syncBuffer
	cmd := exec.Command(bin, "demo")
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &stdout, &stderr
	startGroup(t, cmd)
	deadline := time.Now().Add(waitTimeout)
	for !strings.Contains(stdout.String(), "Stop with Ctrl-C") {
		require.True(t, time.Now().Before(deadline), "no banner; stderr:\n%s", stderr.String())
		time.Sleep(10 * time.Millisecond) // poll interval, bounded by the deadline
	}
	m := bannerCurl.FindStringSubmatch(stdout.String())
	require.NotNil(t, m, "no curl in the banner:\n%s", stdout.String())
	assert.Equal(t, demoCurl(addr), m[1])
	curl, err := exec.LookPath("curl")
	require.NoError(t, err, ".ci/run installs curl")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	args := strings.Fields(m[1])[1:]
	res, err := exec.CommandContext(ctx, curl, args...).CombinedOutput()
	require.NoError(t, err, "%s", res)
	assert.Contains(t, string(res), "  X-Aws-Account: 123456789012\n")

	require.NoError(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)) // Ctrl-C
	require.NoError(t, cmd.Wait(), "stderr:\n%s", stderr.String())
	assert.Contains(t, stdout.String(), "stsproxy demo: stopped")
	requireNothingLeft(t, cmd.Process.Pid, addr, metricsAddr)
}

// TestQuickStartParentKilled starts the demo under a parent that is then
// killed, as "go run" is by one SIGTERM (it does not pass the signal on):
// the demo notices and stops, leaving nothing behind.
func TestQuickStartParentKilled(t *testing.T) {
	t.Parallel()
	env, addr, metricsAddr, _ := quickstartEnv(t)
	var stdout syncBuffer
	cmd := exec.Command("bash", "-c", "stsproxy demo & wait")
	cmd.Env, cmd.Stdout = env, &stdout
	startGroup(t, cmd)
	deadline := time.Now().Add(waitTimeout)
	for !strings.Contains(stdout.String(), "Stop with Ctrl-C") {
		require.True(t, time.Now().Before(deadline), "no banner")
		time.Sleep(10 * time.Millisecond) // poll interval, bounded by the deadline
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	err := cmd.Wait()
	var exitErr *exec.ExitError
	require.True(t, errors.As(err, &exitErr), "bash: %v", err)
	requireNothingLeft(t, cmd.Process.Pid, addr, metricsAddr)
	sc := bufio.NewScanner(strings.NewReader(stdout.String()))
	last := ""
	for sc.Scan() {
		last = sc.Text()
	}
	assert.Equal(t, "stsproxy demo: stopped", last)
}

func TestWatchParent(t *testing.T) {
	t.Parallel()
	ppid := make(chan int, 10)
	ppid <- 100 // at start
	getppid := func() int {
		select {
		case p := <-ppid:
			return p
		default:
			return 100
		}
	}
	stopped := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchParent(context.Background(), getppid, time.Millisecond, func() { close(stopped) })
	}()
	ppid <- 1 // re-parented
	select {
	case <-stopped:
	case <-time.After(waitTimeout):
		t.Fatal("watchParent did not stop")
	}
	<-done

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	watchParent(ctx, func() int { return 1 }, time.Millisecond, func() { t.Error("stopped without a parent change") })
}

// grpcImport marks a README program that imports grpc: hack/grpccheck,
// whose module has grpc, builds those.
const grpcImport = `"google.golang.org/grpc`

// TestREADMELibrarySnippetBuilds builds the README's Go programs (blocks
// that start "package main"), each a whole program with its imports, so
// they cannot drift from the API. Each is laid over a directory of the
// module that does not exist on disk (go build -overlay), so it resolves
// the module's own packages. Programs that import grpc are built by
// hack/grpccheck instead.
func TestREADMELibrarySnippetBuilds(t *testing.T) {
	t.Parallel()
	blocks, _ := readmeBlocks(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	dir := t.TempDir()
	replace := map[string]string{}
	var pkgs []string
	for i, b := range blocks {
		if !strings.HasPrefix(b, "package main\n") || strings.Contains(b, grpcImport) {
			continue
		}
		src := filepath.Join(dir, fmt.Sprintf("main%d.go", i))
		require.NoError(t, os.WriteFile(src, []byte(b), 0o600))
		pkg := fmt.Sprintf("readmesnippet%d", i)
		replace[filepath.Join(root, "internal", pkg, "main.go")] = src
		pkgs = append(pkgs, "./internal/"+pkg)
	}
	require.NotEmpty(t, pkgs, "README.md has no Go program")
	overlay := filepath.Join(dir, "overlay.json")
	data, err := json.Marshal(map[string]any{"Replace": replace})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(overlay, data, 0o600))
	for _, pkg := range pkgs {
		cmd := exec.Command("go", "build", "-overlay", overlay, "-o", os.DevNull, pkg)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "a README program (%s) does not build:\n%s", pkg, out)
	}
}

// TestREADMETokenCommands checks that the README's "stsproxy token"
// command lines are valid: each is parsed as stsproxy token parses its
// arguments, with the directory of --output-file made to exist.
func TestREADMETokenCommands(t *testing.T) {
	t.Parallel()
	blocks, _ := readmeBlocks(t)
	tmp := t.TempDir()
	n := 0
	for _, b := range blocks {
		joined := strings.ReplaceAll(b, "\\\n", " ")
		for line := range strings.Lines(joined) {
			_, args, ok := strings.Cut(line, "stsproxy token ")
			if !ok || strings.Contains(line, "`") {
				continue // prose, not a command
			}
			if i := strings.IndexAny(args, "|;&#>)"); i >= 0 {
				args = args[:i] // the rest of a pipeline or list is another command
			}
			n++
			fields := strings.Fields(args)
			for i, f := range fields {
				if i > 0 && fields[i-1] == "--output-file" {
					fields[i] = filepath.Join(tmp, filepath.Base(f)) // its directory exists in the container
				}
			}
			_, err := parseCommandConfig(tokenCommand, fields, envOf(nil))
			assert.NoError(t, err, "README: stsproxy token %s", args)
		}
	}
	assert.GreaterOrEqual(t, n, 3, "README.md has its stsproxy token commands")
}

// TestDemoPortInUse checks that a demo whose port is taken stops at once,
// naming the address, instead of leaving the user talking to whatever holds
// the port.
func TestDemoPortInUse(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	var stdout, stderr syncBuffer
	env := envOf(map[string]string{"LISTEN_ADDR": busy.Addr().String(), "METRICS_LISTEN_ADDR": "127.0.0.1:0", "STS_LISTEN_ADDR": "127.0.0.1:0"})
	code := run(context.Background(), []string{"demo"}, env, &stdout, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), "listen on --listen-addr")
	assert.Contains(t, stderr.String(), busy.Addr().String())
	assert.NotContains(t, stdout.String(), "is ready")
}

// TestDemoRequestNoDemo checks that "stsproxy demo request" without a demo
// fails, saying how to start one, once its wait is over.
func TestDemoRequestNoDemo(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond) // shortens the minute's wait
	defer cancel()
	var stdout, stderr syncBuffer
	code := run(ctx, []string{"demo", "request", "--listen-addr", freeAddr(t)}, envOf(nil), &stdout, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), "waiting up to 1m0s for the demo")
	assert.Contains(t, stderr.String(), "start one with: stsproxy demo")
	assert.Empty(t, stdout.String())
}
