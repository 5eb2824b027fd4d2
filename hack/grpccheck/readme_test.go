package grpccheck

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/credentials/jwt"

	"github.com/stsauth/stsauth"
	"github.com/stsauth/stsauth/ststest"
)

// readmePrograms returns the README's Go programs that import grpc; the
// others are built by cmd/stsproxy's tests, in the root module.
func readmePrograms(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	var progs []string
	var cur *strings.Builder
	for line := range strings.Lines(string(readme)) {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			cur = &strings.Builder{}
		case cur != nil && trimmed == "```":
			if b := cur.String(); strings.HasPrefix(b, "package main\n") && strings.Contains(b, `"google.golang.org/grpc`) {
				progs = append(progs, b)
			}
			cur = nil
		case cur != nil:
			cur.WriteString(line)
		}
	}
	return progs
}

// TestREADMEProgramsBuild builds the README's gRPC programs in this module,
// which has grpc, each laid over a package directory that does not exist on
// disk (go build -overlay), so they cannot drift from either API.
func TestREADMEProgramsBuild(t *testing.T) {
	progs := readmePrograms(t)
	require.GreaterOrEqual(t, len(progs), 2, "the README's gRPC programs: credentials and token file")
	root, err := filepath.Abs(".")
	require.NoError(t, err)
	dir := t.TempDir()
	replace := map[string]string{}
	var pkgs []string
	for i, p := range progs {
		src := filepath.Join(dir, fmt.Sprintf("main%d.go", i))
		require.NoError(t, os.WriteFile(src, []byte(p), 0o600))
		pkg := fmt.Sprintf("readmeprogram%d", i)
		replace[filepath.Join(root, "internal", pkg, "main.go")] = src
		pkgs = append(pkgs, "./internal/"+pkg)
	}
	overlay := filepath.Join(dir, "overlay.json")
	data, err := json.Marshal(map[string]any{"Replace": replace})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(overlay, data, 0o600))
	for _, pkg := range pkgs {
		cmd := exec.Command("go", "build", "-overlay", overlay, "-o", os.DevNull, pkg)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "a README gRPC program (%s) does not build:\n%s", pkg, out)
	}
}

// TestTokenFileCredentials: a token file in the jwt format of stsproxy
// token --output-file (the token alone, no newline) is read by grpc's own
// credentials/jwt, and the server accepts the token.
func TestTokenFileCredentials(t *testing.T) {
	sts := ststest.NewServer()
	t.Cleanup(sts.Close)
	a := newAPI(t, sts, false)
	tok, err := newSource(t, sts).Token(context.Background(), stsauth.MustAudience(audience))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte(tok.Value()), 0o600))

	creds, err := jwt.NewTokenFileCallCredentials(path)
	require.NoError(t, err)
	conn := dialWith(t, a, creds)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	require.NoError(t, check(ctx, conn))
	assert.Equal(t, int32(1), a.calls.Load())
}
