package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// allCommands returns the proxy and every subcommand, each with the
// arguments that name it.
func allCommands() map[*command][]string {
	out := map[*command][]string{proxyCommand: nil}
	for _, c := range commands {
		out[c] = strings.Fields(c.sub())
	}
	return out
}

// singleDashFlag finds a flag written with one dash at the start of a word.
var singleDashFlag = regexp.MustCompile(`(^|[\s(\[|'"])-[a-z][a-z-]+`)

// TestCommandHelp checks every command's help, by --help and by "stsproxy
// help": its own usage line and description, each flag it takes with two
// dashes, its environment variable where it has one, and nothing written
// with one dash.
func TestCommandHelp(t *testing.T) {
	t.Parallel()
	for cmd, words := range allCommands() {
		t.Run(cmd.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append(slices.Clone(words), "--help"), envOf(nil), &stdout, &stderr)
			require.Equal(t, 0, code, "stderr: %s", stderr.String())
			assert.Empty(t, stderr.String())
			help := stdout.String()
			assert.True(t, strings.HasPrefix(help, "Usage: "+cmd.synopsis+"\n"), "help starts with the usage line:\n%s", help)
			require.NotEmpty(t, cmd.about, "%s has no description", cmd.name)
			assert.Contains(t, strings.Join(strings.Fields(help), " "), strings.Join(strings.Fields(cmd.about), " "))
			if cmd != proxyCommand {
				assert.NotEmpty(t, cmd.summary, "%s has no summary for the list of commands", cmd.name)
			}
			for _, s := range cmd.specs() {
				line := "  --" + s.name
				if s.kind != kindBool {
					line += " value"
				}
				if !s.noEnv {
					line += " (env " + s.env() + ")"
				}
				assert.Contains(t, help, line+"\n    \t"+s.usage)
			}
			for _, l := range strings.Split(help, "\n") {
				assert.False(t, singleDashFlag.MatchString(l), "a flag with one dash: %q", l)
			}

			var viaHelp bytes.Buffer
			code = run(context.Background(), append([]string{"help"}, words...), envOf(nil), &viaHelp, &stderr)
			require.Equal(t, 0, code, "stderr: %s", stderr.String())
			assert.Equal(t, help, viaHelp.String(), "stsproxy help %s", cmd.sub())
		})
	}
}

// TestProxyHelpListsCommands checks that "stsproxy --help" lists every
// subcommand with its summary.
func TestProxyHelpListsCommands(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, envOf(nil), &stdout, &stderr))
	for _, c := range commands {
		assert.Regexp(t, `(?m)^  `+regexp.QuoteMeta(c.sub())+` +`+regexp.QuoteMeta(c.summary)+`$`, stdout.String())
	}
	var bare bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"help"}, envOf(nil), &bare, &stderr))
	assert.Equal(t, stdout.String(), bare.String(), "stsproxy help is stsproxy --help")
}

// TestCommandBadFlag checks that every command answers an unknown flag and
// a mistyped one the same way: one line in the command's shape, the flag
// with two dashes (and the one meant, if close), and where its help is;
// exit code 2.
func TestCommandBadFlag(t *testing.T) {
	t.Parallel()
	for cmd, words := range allCommands() {
		t.Run(cmd.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append(slices.Clone(words), "--no-such-flag"), envOf(nil), &stdout, &stderr)
			assert.Equal(t, 2, code)
			assert.Empty(t, stdout.String())
			assert.Equal(t, cmd.prefix()+"unknown flag --no-such-flag\nRun '"+cmd.name+" --help' for usage.\n", stderr.String())

			specs := cmd.specs()
			if len(specs) == 0 {
				return
			}
			name := specs[0].name
			typo := name[:len(name)-2] + name[len(name)-1:] + name[len(name)-2:len(name)-1] // the last two swapped
			stderr.Reset()
			code = run(context.Background(), append(slices.Clone(words), "--"+typo, "x"), envOf(nil), &stdout, &stderr)
			assert.Equal(t, 2, code)
			assert.Equal(t, cmd.prefix()+"unknown flag --"+typo+" (did you mean --"+name+"?)\nRun '"+cmd.name+" --help' for usage.\n", stderr.String())
		})
	}
}

// TestErrorShape checks error lines of several kinds and commands: one
// "stsproxy: [command: ]" prefix, never repeated, flags with two dashes.
func TestErrorShape(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--upstream-hots", "x"}, "stsproxy: unknown flag --upstream-hots (did you mean --upstream-host?)"},
		{[]string{"--listen-addr"}, "stsproxy: flag --listen-addr needs a value"},
		{[]string{"serve"}, `stsproxy: unknown command "serve": want one of token, demo, `},
		{[]string{"token"}, "stsproxy: token: missing --token-audience/TOKEN_AUDIENCE: want 1 to 10 audience values"},
		{[]string{"token", "--listen-addr", ":1"}, "stsproxy: token: unknown flag --listen-addr: stsproxy token does not take it"},
		{[]string{"demo", "--sts-listen-addr", "0.0.0.0:8090"}, `stsproxy: demo: invalid --sts-listen-addr/STS_LISTEN_ADDR "0.0.0.0:8090": want a loopback host:port`},
		{[]string{"demo", "token", "--sts-listen-addr", "nope"}, `stsproxy: demo token: invalid --sts-listen-addr/STS_LISTEN_ADDR "nope": want a loopback host:port (missing port)`},
		{[]string{"verify"}, "stsproxy: verify: missing --issuer"},
		{[]string{"verify", "--issuer", "http://127.0.0.1:1", "x"}, "stsproxy: verify: --issuer \"http://127.0.0.1:1\" is http: add --allow-insecure-issuer"},
		{[]string{"doctor", "--json=maybe"}, `stsproxy: doctor: invalid --json "maybe": want true or false`},
		{[]string{"help", "nope"}, `stsproxy: help: unknown command "nope"`},
		{[]string{"version", "extra"}, `stsproxy: version: unexpected argument "extra"`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, envOf(nil), &stdout, &stderr)
			assert.Equal(t, 2, code)
			first, _, _ := strings.Cut(stderr.String(), "\n")
			assert.True(t, strings.HasPrefix(first, tc.want), "got %q, want it to start with %q", first, tc.want)
			assert.False(t, repeatedPrefix(first), "a repeated prefix: %q", first)
			assert.False(t, singleDashFlag.MatchString(first), "a flag with one dash: %q", first)
		})
	}
}

// repeatedPrefix reports whether a message repeats a prefix, as
// "stsproxy: verify: verify: wrong audience" does, or names stsproxy twice.
func repeatedPrefix(msg string) bool {
	parts := strings.Split(msg, ": ")
	for i := 1; i < len(parts); i++ {
		if parts[i] == parts[i-1] {
			return true
		}
	}
	return strings.Count(msg, "stsproxy: ") > 1
}

// TestCommandMessage checks that a command's prefix is added once, whatever
// prefixes the message already has.
func TestCommandMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cmd       *command
		msg, want string
	}{
		{verifyCommand, "verify: wrong audience", "stsproxy: verify: wrong audience"},
		{verifyCommand, "stsproxy: verify: wrong audience", "stsproxy: verify: wrong audience"},
		{tokenCommand, "stsauth: get web identity token for a: boom", "stsproxy: token: stsauth: get web identity token for a: boom"},
		{demoRequestCommand, "demo request: x", "stsproxy: demo request: x"},
		{demoRequestCommand, "request: x", "stsproxy: demo request: x"},
		{proxyCommand, "stsproxy: listen on --listen-addr: x", "stsproxy: listen on --listen-addr: x"},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, tc.cmd.message(tc.msg), "%s.message(%q)", tc.cmd.name, tc.msg)
	}
	assert.True(t, repeatedPrefix("stsproxy: verify: verify: wrong audience"))
	assert.True(t, repeatedPrefix("stsproxy: stsproxy: x"))
	assert.False(t, repeatedPrefix("stsproxy: demo request: x"))
}

// TestEverySubcommandIsListed checks that each <name>_cmd.go file's
// subcommand is in commands, so that help lists it and its help and errors
// come out like the others'.
func TestEverySubcommandIsListed(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*_cmd.go")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		name := strings.TrimSuffix(f, "_cmd.go")
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		if !strings.Contains(string(src), `name:     "stsproxy `+name) && !strings.Contains(string(src), `name: "stsproxy `+name) {
			continue // a file of shared code, not a subcommand
		}
		assert.True(t, slices.ContainsFunc(commands, func(c *command) bool { return strings.Fields(c.sub())[0] == name }),
			"%s defines stsproxy %s, which is not in commands", f, name)
	}
	for _, c := range commands {
		cmd, rest := findCommand(strings.Fields(c.sub()))
		assert.Same(t, c, cmd)
		assert.Empty(t, rest)
	}
}

// TestEditDistance checks the typo distance behind "did you mean".
func TestEditDistance(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"upstream-hots", "upstream-host", 1}, {"isuer", "issuer", 1},
		{"listen-adr", "listen-addr", 1}, {"token", "tokne", 1}, {"abc", "xyz", 3},
	} {
		assert.Equal(t, tc.want, editDistance(tc.a, tc.b), "editDistance(%q, %q)", tc.a, tc.b)
	}
}

// TestAudienceInUse checks what the startup log says about audiences, the
// empty TOKEN_AUDIENCE= of a per-request audience included.
func TestAudienceInUse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"static", []string{"--upstream-host", "api.example.com", "--token-audience", "https://b", "--token-audience", "https://a"}, nil, "https://a,https://b"},
		{"static from env", []string{"--upstream-host", "api.example.com"}, map[string]string{"TOKEN_AUDIENCE": "https://x"}, "https://x"},
		{"pinned", []string{"--upstream-host", "api.example.com:8443"}, nil, "https://api.example.com (no --token-audience/TOKEN_AUDIENCE: derived from --upstream-host)"},
		{"empty env, header routing", nil, map[string]string{"TOKEN_AUDIENCE": ""}, "<scheme>://<host> of each request's upstream (no --token-audience/TOKEN_AUDIENCE: derived per request)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseConfig(tc.args, envOf(tc.env))
			require.NoError(t, err)
			assert.Equal(t, tc.want, audienceInUse(cfg))
		})
	}
}
