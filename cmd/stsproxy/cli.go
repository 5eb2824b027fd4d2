package main

import (
	"flag"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// commands lists stsproxy's subcommands, in the order "stsproxy help" lists
// them. A new subcommand adds its *command here (and its case to run); its
// help, its flags' usage and its errors then come out like every other's.
var commands = []*command{
	tokenCommand, demoCommand, demoRequestCommand, demoTokenCommand, verifyCommand, inboundCommand,
	policyCommand, doctorCommand, healthcheckCommand, versionCommand, helpCommand,
}

// versionCommand is "stsproxy version", the same as --version.
var versionCommand = &command{
	name:     "stsproxy version",
	synopsis: "stsproxy version",
	summary:  "print the version",
	about:    "Prints the version of stsproxy, as --version does.",
	flags:    []string{}, // none
}

// helpCommand is "stsproxy help".
var helpCommand = &command{
	name:     "stsproxy help",
	synopsis: "stsproxy help [COMMAND]",
	summary:  "print the help of stsproxy or of a command",
	about:    "Prints the help of stsproxy (its commands and the proxy's flags), or of COMMAND, as 'stsproxy COMMAND --help' does.",
	flags:    []string{}, // none
	args:     2,          // "demo request"
}

// sub returns the command's name after "stsproxy ", empty for the proxy.
func (c *command) sub() string {
	_, s, _ := strings.Cut(c.name, " ")
	return s
}

// prefix returns what each of the command's error lines starts with:
// "stsproxy: " for the proxy, "stsproxy: token: " for a subcommand.
func (c *command) prefix() string {
	if s := c.sub(); s != "" {
		return "stsproxy: " + s + ": "
	}
	return "stsproxy: "
}

// message returns msg with the command's prefix, dropping the prefixes msg
// already has: an error of package verify under "stsproxy verify" reads
// "stsproxy: verify: wrong audience", not "stsproxy: verify: verify: ...".
func (c *command) message(msg string) string {
	msg = strings.TrimPrefix(msg, "stsproxy: ")
	if s := c.sub(); s != "" {
		msg = strings.TrimPrefix(msg, s+": ")
		if i := strings.LastIndexByte(s, ' '); i >= 0 {
			msg = strings.TrimPrefix(msg, s[i+1:]+": ")
		}
	}
	return c.prefix() + msg
}

// fail prints the formatted message as the command's one error line and
// returns code: 1 for a runtime failure.
func (c *command) fail(w io.Writer, code int, format string, args ...any) int {
	fmt.Fprintln(w, c.message(fmt.Sprintf(format, args...)))
	return code
}

// findCommand returns the subcommand that args start with, the longest
// match ("demo request" before "demo"), and the arguments after its name.
func findCommand(args []string) (*command, []string) {
	var best *command
	n := 0
	for _, c := range commands {
		words := strings.Fields(c.sub())
		if len(words) > n && len(args) >= len(words) && slices.Equal(args[:len(words)], words) {
			best, n = c, len(words)
		}
	}
	if best == nil {
		return nil, args
	}
	return best, args[n:]
}

// runHelp implements "stsproxy help [COMMAND]".
func runHelp(args []string, stdout, stderr io.Writer) int {
	cfg, code := loadConfig(helpCommand, args, noEnv, stdout, stderr)
	if cfg == nil {
		return code
	}
	if len(cfg.args) == 0 {
		writeCommandUsage(stdout, proxyCommand)
		return 0
	}
	cmd, rest := findCommand(cfg.args)
	if cmd == nil || len(rest) > 0 {
		return configError(stderr, helpCommand, fmt.Sprintf("unknown command %q: want one of %s", strings.Join(cfg.args, " "), commandNames()))
	}
	writeCommandUsage(stdout, cmd)
	return 0
}

// commandNames returns the subcommands' names, for messages.
func commandNames() string {
	names := make([]string, len(commands))
	for i, c := range commands {
		names[i] = c.sub()
	}
	return strings.Join(names, ", ")
}

// singleDash matches a flag the flag package names with one dash.
var singleDash = regexp.MustCompile(`(^|: |for |flag )-([A-Za-z0-9])`)

// flagMessage rewrites an error of the flag package in stsproxy's style:
// flags with two dashes, and for a mistyped flag the one meant, or that the
// flag is another command's.
func flagMessage(err error, cmd *command, fs *flag.FlagSet) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		if slices.ContainsFunc(flagSpecs, func(s flagSpec) bool { return s.name == name }) {
			return fmt.Sprintf("unknown flag --%s: %s does not take it", name, cmd.name)
		}
		msg = "unknown flag --" + name
		if near := closestFlag(fs, name); near != "" {
			msg += " (did you mean --" + near + "?)"
		}
		return msg
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return "flag --" + name + " needs a value"
	}
	return singleDash.ReplaceAllString(msg, "$1--$2")
}

// closestFlag returns the flag of fs nearest to name, if one is within a
// couple of typos of it.
func closestFlag(fs *flag.FlagSet, name string) string {
	best, bestDist := "", 3
	fs.VisitAll(func(f *flag.Flag) {
		if d := editDistance(name, f.Name); d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of neighbours.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// writeCommandUsage prints cmd's help: its usage line, what it does, the
// commands (for the proxy), and the flags it takes, each with its
// environment variable and default.
func writeCommandUsage(w io.Writer, cmd *command) {
	fmt.Fprintf(w, "Usage: %s\n", cmd.synopsis)
	if cmd == proxyCommand {
		fmt.Fprintf(w, "       stsproxy COMMAND [flags]\n")
	}
	if cmd.about != "" {
		fmt.Fprintf(w, "\n%s\n", wrap(cmd.about, 80))
	}
	if cmd == proxyCommand {
		fmt.Fprintf(w, "\nCommands:\n")
		width := 0
		for _, c := range commands {
			width = max(width, len(c.sub()))
		}
		for _, c := range commands {
			fmt.Fprintf(w, "  %-*s  %s\n", width, c.sub(), c.summary)
		}
		fmt.Fprintf(w, "\nRun 'stsproxy help COMMAND' (or 'stsproxy COMMAND --help') for a command's flags.\n")
	}
	specs := cmd.specs()
	if len(specs) == 0 {
		return
	}
	title := "Flags"
	if cmd == proxyCommand {
		title = "Flags of the proxy"
	}
	if slices.ContainsFunc(specs, func(s flagSpec) bool { return !s.noEnv }) {
		fmt.Fprintf(w, "\n%s (each can also be set by the environment variable shown; a flag beats its variable):\n", title)
	} else {
		fmt.Fprintf(w, "\n%s:\n", title)
	}
	for _, s := range specs {
		arg := " value"
		if s.kind == kindBool {
			arg = ""
		}
		env := " (env " + s.env() + ")"
		if s.noEnv {
			env = ""
		}
		fmt.Fprintf(w, "  --%s%s%s\n    \t%s", s.name, arg, env, s.usage)
		if s.def != "" {
			fmt.Fprintf(w, " (default %s)", s.def)
		}
		fmt.Fprintln(w)
	}
}

// wrap breaks text into lines of at most width columns, keeping its
// paragraphs (separated by blank lines); a paragraph that starts with two
// spaces, such as a command line, is printed as it is.
func wrap(text string, width int) string {
	var b strings.Builder
	for i, para := range strings.Split(text, "\n\n") {
		if i > 0 {
			b.WriteString("\n\n")
		}
		if strings.HasPrefix(para, "  ") {
			b.WriteString(para)
			continue
		}
		n := 0
		for j, word := range strings.Fields(para) {
			switch {
			case j == 0:
			case n+1+len(word) > width:
				b.WriteByte('\n')
				n = 0
			default:
				b.WriteByte(' ')
				n++
			}
			b.WriteString(word)
			n += len(word)
		}
	}
	return b.String()
}
