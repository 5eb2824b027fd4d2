package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stsauth/stsauth"
)

// Defaults of the configuration, named so usage text and validation agree.
const (
	defaultListenAddr      = ":8080"
	defaultUpstreamScheme  = "https"
	defaultHostHeader      = "X-Upstream-Host"
	defaultUpstreamTimeout = 30 * time.Second
	// defaultUpstreamIdleConns is --upstream-idle-conns: as many idle
	// connections as one upstream may keep, so header routing over many
	// hosts holds no more memory for them than a single upstream does.
	defaultUpstreamIdleConns = maxIdleConnsPerHost
	defaultMetricsListenAddr = ":9090"
	defaultMetricsPath       = "/metrics"
	defaultShutdownTimeout   = 15 * time.Second

	// maxShutdownDelay bounds --shutdown-delay: endpoint controllers and
	// load balancers stop routing to a terminating pod within seconds, so a
	// longer delay is a mistake (5h for 5s) that would hold a rollout.
	maxShutdownDelay = 5 * time.Minute

	// anyHostPattern is the --allowed-hosts value that allows any host, the
	// explicit opt-out of the allowlist.
	anyHostPattern = "*"

	// hostHeaderRequestLine is the --host-header value that routes by the
	// request's own Host line instead of a separate header.
	hostHeaderRequestLine = "Host"
)

// flagKind says how a flag's raw value is collected from the command line
// and the environment.
type flagKind int

// The flag kinds.
const (
	kindString    flagKind = iota // last value wins
	kindBool                      // a boolean switch: --x, --x=false
	kindList                      // repeatable; the env var is a comma list
	kindCommaList                 // repeatable and comma list, on the flag and in the env var
)

// flagSpec describes one flag and its environment variable. The spec list is
// the single source for parsing, env fallback and usage text, so a flag can
// never lack its env var.
type flagSpec struct {
	name  string
	kind  flagKind
	def   string // shown in usage; applied by validation, not by flag
	usage string
	noEnv bool // read from the command line only

	// inbound marks a flag of "stsproxy inbound" alone: the outbound proxy,
	// which takes every other flag, neither accepts nor validates it.
	inbound bool
}

// env returns the environment variable for the flag: upper snake case of its
// name, so --upstream-host is UPSTREAM_HOST.
func (s flagSpec) env() string {
	switch s.name {
	case "token-tag":
		return "TOKEN_TAGS" // a comma list in the environment, hence plural
	case "output-file", "output-format", "refresh":
		// Names this generic would clash with other programs' variables.
		return "TOKEN_" + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))
	}
	return strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))
}

// flagSpecs lists every flag stsproxy and its subcommands accept, in usage
// order: the proxy's, then those of "stsproxy inbound" alone, then those of
// the token file ("stsproxy token" alone).
var flagSpecs = slices.Concat(proxyFlagSpecs, inboundFlagSpecs, tokenFileFlagSpecs)

// proxyFlagSpecs lists the flags of the outbound proxy, some of which the
// subcommands share.
var proxyFlagSpecs = []flagSpec{
	{name: "listen-addr", def: defaultListenAddr, usage: "address the proxy listens on, host:port"},
	{name: "allow-remote-clients", kind: kindBool, def: "false", usage: "the proxy is shared: clients on other hosts are expected and a network policy decides who reaches --listen-addr; without it a listener not on loopback logs a warning"},
	{name: "upstream-host", usage: "pin every request to this upstream host[:port]; empty routes by --host-header"},
	{name: "upstream-scheme", def: defaultUpstreamScheme, usage: "scheme used to reach the upstream: http or https (any case)"},
	{name: "host-header", def: defaultHostHeader, usage: `request header naming the upstream host; "Host" routes by the Host line`},
	{name: "allowed-hosts", kind: kindCommaList, usage: "upstream hosts tokens may be sent to: exact or *.suffix, optional :port (comma list, repeatable); '*' alone allows any host"},
	{name: "require-tls-upstream", kind: kindBool, def: "false", usage: "refuse to send a token over plain http to an upstream that is not a loopback address"},
	{name: "upstream-timeout", def: defaultUpstreamTimeout.String(), usage: "how long to wait for upstream response headers, more than 0"},
	{name: "upstream-idle-conns", def: strconv.Itoa(defaultUpstreamIdleConns), usage: "idle upstream connections kept for reuse, in all (at most " + strconv.Itoa(maxIdleConnsPerHost) + " per host), 1 to 100000; each costs about 25 KiB"},
	{name: "token-audience", kind: kindList, usage: "token audience (repeatable; env is a comma list); unset derives <scheme>://<host> per request"},
	{name: "token-header", def: stsauth.DefaultHeader, usage: "request header that carries the token to the upstream; clients' values of it and of Authorization are removed"},
	{name: "token-format", def: stsauth.DefaultFormat, usage: "value of --token-header, " + stsauth.TokenPlaceholder + " standing for the token, exactly once; no control characters (CR, LF)"},
	{name: "token-signing-algorithm", def: stsauth.RS256, usage: "token signing algorithm: RS256 or ES384 (any case)"},
	{name: "token-duration", def: "1h", usage: "requested token lifetime, 60s to 1h"},
	{name: "token-refresh-skew", def: "5m", usage: "refresh a token this long before it expires, more than 0 and less than --token-duration; unset and not less than --token-duration: half the duration"},
	{name: "token-tag", kind: kindList, usage: "session tag key=value added to every token (repeatable; env TOKEN_TAGS is a comma list)"},
	{name: "token-fetch-timeout", def: stsauth.DefaultFetchTimeout.String(), usage: "the longest a request waits for a token from STS, its wait for a fetch slot and retries included, more than 0"},
	{name: "token-cache-size", def: strconv.Itoa(stsauth.DefaultCacheSize), usage: "how many audience sets to cache tokens for, at least 1"},
	{name: "token-mint-rate", def: strconv.FormatFloat(stsauth.DefaultMintRate, 'g', -1, 64), usage: "tokens minted a second for upstreams whose token is not cached, beyond --token-mint-burst; past it such a request gets 503 at once, cached upstreams keep working; 0 means no limit"},
	{name: "token-mint-burst", def: strconv.Itoa(stsauth.DefaultMintBurst), usage: "tokens that may be minted at once for upstreams whose token is not cached, at least 1"},
	{name: "token-fetch-concurrency", def: strconv.Itoa(stsauth.DefaultMaxConcurrentFetches), usage: "most STS calls in flight at once, across audience sets, 1 to " + strconv.Itoa(stsauth.MaxMaxConcurrentFetches)},
	{name: "log-level", def: "info", usage: "log level: debug, info, warn or error (any case)"},
	{name: "log-format", def: "json", usage: "log format: json or text (any case)"},
	{name: "access-log", kind: kindBool, def: "true", usage: "log one info record per request"},
	{name: "tls-cert", usage: "PEM certificate file; serve TLS (needs --tls-key)"},
	{name: "tls-key", usage: "PEM private key file (needs --tls-cert)"},
	{name: "metrics-enabled", kind: kindBool, def: "true", usage: "serve Prometheus metrics on the admin listener; false binds no admin listener, so no /healthz or /readyz either"},
	{name: "metrics-listen-addr", def: defaultMetricsListenAddr, usage: "admin listener for /healthz, /readyz and metrics, host:port"},
	{name: "metrics-path", def: defaultMetricsPath, usage: "path of the metrics endpoint, starting with /"},
	{name: "shutdown-delay", def: "0s", usage: "on SIGTERM, answer /readyz 503 at once but keep serving for this long before shutting down, so load balancers stop sending first; 0s to 5m"},
	{name: "shutdown-timeout", def: defaultShutdownTimeout.String(), usage: "how long in-flight requests may take to finish on shutdown, after --shutdown-delay, more than 0"},
	{name: "local-sts", kind: kindBool, def: "false", usage: "start an in-process STS emulator on loopback (local development only)"},
	// --region has no env var of its own: the AWS SDK reads AWS_REGION.
	{name: "region", usage: "AWS Region of the STS endpoint; unset: AWS_REGION, AWS_DEFAULT_REGION, the profile's region, or on EC2 the instance's (asked of instance metadata for at most 1s)", noEnv: true},
	{name: "sts-fallback-regions", kind: kindCommaList, usage: "AWS Regions whose STS a token fetch asks, in order, when STS in the primary Region fails (throttling, 5xx, network, timeout; never an error about the request), with the same credentials: REGION or REGION=ENDPOINT_URL (a VPC endpoint; the primary's AWS_ENDPOINT_URL_STS is not used for them), distinct, not the primary (comma list, repeatable)"},
	// --version has no env var: VERSION is commonly set in container
	// images to something else, which must not break or alter startup.
	{name: "version", kind: kindBool, def: "false", usage: "print the version and exit", noEnv: true},
}

// command is stsproxy or one of its subcommands: what its help says and the
// flags it reads. A subcommand lists only the flags it uses, so its --help
// shows those alone and a flag or environment variable it ignores is neither
// accepted nor validated there. [writeCommandUsage] prints any command's
// help from these fields alone, and [command.message] gives its errors
// their one shape.
type command struct {
	name     string            // "stsproxy" or "stsproxy token", as typed
	synopsis string            // the usage line
	summary  string            // what it does, in one line, for the list of commands
	about    string            // what it does, for its help: paragraphs, wrapped when printed
	flags    []string          // names of the proxy's flags it takes; nil takes every one
	own      []flagSpec        // flags of its own, not the proxy's, listed after those in its help
	defaults map[string]string // defaults of its own, by flag name, replacing the flags'
	usage    map[string]string // usage texts of its own, by flag name, replacing the flags'
	args     int               // how many arguments it takes after the flags
}

// spec returns s with cmd's own default and usage text, if it has them.
func (c *command) spec(s flagSpec) flagSpec {
	if d, ok := c.defaults[s.name]; ok {
		s.def = d
	}
	if u, ok := c.usage[s.name]; ok {
		s.usage = u
	}
	return s
}

// takes reports whether c reads the flag named name. A command that takes
// every flag (nil flags) does not take those of "stsproxy inbound" or the
// token file's.
func (c *command) takes(name string) bool {
	if c.flags == nil {
		own := func(s flagSpec) bool { return s.name == name }
		return !slices.ContainsFunc(inboundFlagSpecs, own) && !slices.ContainsFunc(tokenFileFlagSpecs, own)
	}
	return slices.Contains(c.flags, name)
}

// specs returns the flags c takes, as its help lists them: in the order of
// c.flags (the proxy's usage order when it takes every proxy flag), then its
// own.
func (c *command) specs() []flagSpec {
	var out []flagSpec
	if c.flags == nil {
		for _, s := range flagSpecs {
			if c.takes(s.name) {
				out = append(out, c.spec(s))
			}
		}
	}
	for _, name := range c.flags {
		if i := slices.IndexFunc(flagSpecs, func(s flagSpec) bool { return s.name == name }); i >= 0 {
			out = append(out, c.spec(flagSpecs[i]))
		}
	}
	for _, s := range c.own {
		out = append(out, c.spec(s))
	}
	return out
}

// Values of --output-format.
const (
	outputJWT  = "jwt"
	outputJSON = "json"
)

// proxyCommand is stsproxy itself: the proxy, with every flag.
var proxyCommand = &command{
	name:     "stsproxy",
	synopsis: "stsproxy [flags]",
	about: "stsproxy is a reverse proxy that puts an AWS STS web identity token " +
		"(Authorization: Bearer <jwt>) on every request it forwards, for clients you cannot change. " +
		"It forwards to the pinned --upstream-host, or to the host a request names in --host-header. " +
		"The token's audience is --token-audience; unset, it is derived per request: <scheme>://<host> of the upstream.",
}

// tokenCommand is "stsproxy token", which prints one token, or keeps a file
// holding a valid one. Its admin listener is off unless
// --metrics-listen-addr is given.
var tokenCommand = &command{
	name:     "stsproxy token",
	synopsis: "stsproxy token --token-audience AUD [--token-audience AUD...] [--output-file PATH [--refresh]] [flags]",
	summary:  "print one token for --token-audience, or keep a file holding a valid one",
	about: "Mints one token for the --token-audience set with the AWS credentials of the environment " +
		"(or, with --local-sts, from an emulator started for this command) and prints it on stdout, and nothing else, " +
		"or writes it to --output-file; with --refresh it keeps that file holding a valid token until stopped, " +
		"serving /healthz, /readyz and metrics on --metrics-listen-addr if given. " +
		"Its environment variables are the proxy's; those of flags it does not take are ignored.",
	flags: []string{"token-audience", "token-signing-algorithm", "token-duration", "token-tag", "token-fetch-timeout",
		"output-file", "output-format", "refresh", "metrics-listen-addr", "local-sts", "region", "sts-fallback-regions", "log-level", "log-format"},
	defaults: map[string]string{"metrics-listen-addr": ""},
	usage: map[string]string{
		"token-audience":      "audience of the token, required: 1 to 10 values of at most 1000 characters (repeatable; env is a comma list)",
		"token-fetch-timeout": "the longest to wait for the token from STS, retries included, more than 0",
		"metrics-listen-addr": "with --refresh: admin listener for /healthz, /readyz (ready while the file holds a token) and metrics, host:port; none if empty",
		"local-sts":           "mint the token with an STS emulator started for this command (its keys go with it: the token cannot be verified afterwards)",
	},
}

// config is the validated configuration of one run.
type config struct {
	listenAddr      string
	remoteClients   bool   // --allow-remote-clients: a non-loopback listener is intended
	upstreamHost    string // pinned host[:port]; empty routes by hostHeader
	upstreamScheme  string
	hostHeader      string // canonical header name, or "Host" for the Host line
	allowedHosts    []string
	allowed         *stsauth.AllowedHosts // nil when allowedHosts is empty or '*'
	anyHost         bool                  // --allowed-hosts '*': header routing may reach any host
	upstreamTimeout time.Duration
	upstreamIdle    int  // idle upstream connections kept, in all; 0: the default
	requireTLS      bool // refuse plain http to non-loopback upstreams

	tokenHeader string // canonical name of the header that carries the token
	tokenFormat string // its value, stsauth.TokenPlaceholder standing for the token

	audiences    []string         // as given; empty means per-request host audience
	audience     stsauth.Audience // the canonical set of audiences, zero if none
	signingAlg   string
	duration     time.Duration
	refreshSkew  time.Duration
	skewHalved   bool // the default skew did not fit duration: refreshSkew is duration/2
	tags         map[string]string
	fetchTimeout time.Duration // bounds how long a request waits for a token
	cacheSize    int
	maxFetches   int     // STS calls in flight at once
	mintRate     float64 // mints a second for sets not cached; 0: no limit
	mintBurst    int

	logLevel  slog.Level
	logFormat string
	accessLog bool

	tlsCertFile, tlsKeyFile string
	tlsCert                 *tls.Certificate // loaded when both files are given

	metricsEnabled    bool
	metricsListenAddr string
	metricsPath       string
	shutdownDelay     time.Duration // keep serving this long after the signal, not ready
	shutdownTimeout   time.Duration
	localSTS          bool
	region            string           // --region; empty leaves it to the AWS configuration
	fallbackRegions   []fallbackRegion // --sts-fallback-regions, in order
	version           bool

	inbound *inboundConfig // "stsproxy inbound" only

	// logOut is where newLogger's first logger for this config writes;
	// the access log writes there too, in batches. Nil until then.
	logOut io.Writer

	outputFile   string // "stsproxy token": write here instead of stdout
	outputFormat string // outputJWT or outputJSON
	refresh      bool   // keep outputFile fresh until stopped

	args []string             // the arguments after the flags, for a command that takes them
	raw  map[string]*rawValue // every flag's value as given, by name, for flags validate does not convert

	// Set by "stsproxy demo", never by flags: the STS client to use instead
	// of one built from the configuration, and a func serve calls once the
	// proxy listens and holds its first token.
	sts     stsauth.GetWebIdentityTokenAPIClient
	onReady func(addr, metricsAddr string)

	// Set by tests, never by flags: dials upstream connections in place of
	// the guarded dialer, so tests can name hosts that never resolve.
	dialUpstream func(ctx context.Context, network, addr string) (net.Conn, error)
}

// flagString returns the value of the flag name that the command takes:
// the last given by flag or environment variable, else its default.
func (c *config) flagString(name string) string { return c.raw[name].last() }

// flagList returns the values of the repeatable flag name that the command
// takes.
func (c *config) flagList(name string) []string { return c.raw[name].vals }

// flagBool returns the value of the boolean flag name that the command
// takes, checked when the flags were parsed.
func (c *config) flagBool(name string) bool {
	b, _ := strconv.ParseBool(c.raw[name].last())
	return b
}

// routeByRequestHost reports whether the upstream comes from the request's
// Host line.
func (c *config) routeByRequestHost() bool {
	return c.upstreamHost == "" && c.hostHeader == hostHeaderRequestLine
}

// listenLoopback reports whether --listen-addr is a loopback address, so
// only local processes can reach the proxy. An empty or wildcard host
// listens on every interface.
func (c *config) listenLoopback() bool {
	host, _, err := net.SplitHostPort(c.listenAddr)
	return err == nil && stsauth.IsLoopbackHost(host)
}

// upstreamLoopback reports whether the pinned upstream host is a loopback
// address, which plain http may reach without crossing a network.
func (c *config) upstreamLoopback() bool {
	host, _, err := stsauth.SplitHostPort(c.upstreamHost)
	return err == nil && stsauth.IsLoopbackHost(host)
}

// usageError is a configuration error: run prints it with a pointer to
// --help and exits 2.
type usageError struct{ msg string }

// Error returns the message, which names the flag, env var and valid range.
func (e *usageError) Error() string { return e.msg }

// invalid returns the usageError for a bad value, naming the flag and its env
// var and the valid range: invalid --token-duration/TOKEN_DURATION "2h": want 60s to 1h.
// A flag without an env var is named alone: invalid --issuer "x": ...
func invalid(s flagSpec, value, want string, args ...any) error {
	name := "--" + s.name
	if !s.noEnv {
		name += "/" + s.env()
	}
	return &usageError{msg: fmt.Sprintf("invalid %s %q: %s", name, value, fmt.Sprintf(want, args...))}
}

// rawValue collects a flag's values as strings, so every conversion and its
// error message happen in one place, in validation.
type rawValue struct {
	spec flagSpec
	vals []string
}

// String returns the values joined by commas, for messages.
func (v *rawValue) String() string {
	if v == nil {
		return ""
	}
	return strings.Join(v.vals, ",")
}

// Set records a value from the command line; it never fails, because
// validation reports errors with the flag and env var names.
func (v *rawValue) Set(s string) error {
	switch v.spec.kind {
	case kindList:
		v.vals = append(v.vals, s)
	case kindCommaList:
		v.vals = append(v.vals, strings.Split(s, ",")...)
	default:
		v.vals = []string{s}
	}
	return nil
}

// IsBoolFlag lets "--metrics-enabled" stand for "--metrics-enabled=true".
func (v *rawValue) IsBoolFlag() bool { return v.spec.kind == kindBool }

// setEnv applies an environment value: list kinds are comma lists.
func (v *rawValue) setEnv(s string) {
	if v.spec.kind == kindList || v.spec.kind == kindCommaList {
		v.vals = strings.Split(s, ",")
		return
	}
	v.vals = []string{s}
}

// last returns the effective value, or the default if none was given.
func (v *rawValue) last() string {
	if len(v.vals) == 0 {
		return v.spec.def
	}
	return v.vals[len(v.vals)-1]
}

// set reports whether a value was given by flag or env.
func (v *rawValue) set() bool { return len(v.vals) > 0 }

// parseConfig parses the proxy's args and the environment (through getenv)
// into a validated config; see [parseCommandConfig].
func parseConfig(args []string, getenv func(string) string) (*config, error) {
	return parseCommandConfig(proxyCommand, args, getenv)
}

// parseCommandConfig parses args and the environment (through getenv) into a
// validated config for cmd. A flag beats its env var, which beats the
// default; which flags were given is decided with [flag.FlagSet.Visit].
// Flags cmd does not take are rejected on the command line, not read from
// the environment, and so keep their (valid) defaults. It returns
// [flag.ErrHelp] for -h/--help and a *usageError for anything invalid.
func parseCommandConfig(cmd *command, args []string, getenv func(string) string) (*config, error) {
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	raw := make(map[string]*rawValue, len(flagSpecs)+len(cmd.own))
	for _, s := range flagSpecs {
		v := &rawValue{spec: cmd.spec(s)}
		raw[s.name] = v
		if cmd.takes(s.name) {
			fs.Var(v, s.name, s.usage)
		}
	}
	own := make(map[string]*rawValue, len(cmd.own))
	for _, s := range cmd.own {
		v := &rawValue{spec: cmd.spec(s)}
		raw[s.name], own[s.name] = v, v
		fs.Var(v, s.name, s.usage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{msg: flagMessage(err, cmd, fs)}
	}
	if fs.NArg() > cmd.args {
		return nil, &usageError{msg: fmt.Sprintf("unexpected argument %q", fs.Arg(cmd.args))}
	}
	visited := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { visited[f.Name] = true })
	for _, v := range raw {
		s := v.spec
		if visited[s.name] || s.noEnv || (own[s.name] == nil && !cmd.takes(s.name)) {
			continue
		}
		if e := getenv(s.env()); e != "" {
			v.setEnv(e)
		}
	}
	// A list flag's default is applied as a value, since validation reads
	// lists only when set; other defaults are read through rawValue.last.
	for name, d := range cmd.defaults {
		if rv := raw[name]; !rv.set() && (rv.spec.kind == kindList || rv.spec.kind == kindCommaList) {
			rv.setEnv(d)
		}
	}
	for _, s := range cmd.specs() {
		if v := raw[s.name]; s.kind == kindBool {
			if _, err := strconv.ParseBool(v.last()); err != nil {
				return nil, invalid(v.spec, v.last(), "want true or false")
			}
		}
	}
	c, err := validate(raw)
	if err == nil && cmd == inboundCommand {
		c.inbound, err = validateInbound(raw, c)
	}
	if err != nil {
		return nil, err
	}
	c.args, c.raw = fs.Args(), raw
	if c.version || cmd != proxyCommand {
		return c, nil
	}
	if rv := raw["token-audience"]; c.upstreamHost == "" && rv.set() && !raw["allowed-hosts"].set() {
		// One static token, a credential for the real API, would go to
		// whatever host a client names.
		return nil, invalid(rv.spec, rv.String(), "with routing by --host-header/HOST_HEADER (%s) any client could send this static token to a host it names: "+
			"pin the upstream with --upstream-host/UPSTREAM_HOST, or set --allowed-hosts/ALLOWED_HOSTS to the hosts it may go to ('*' allows any host)", c.hostHeader)
	}
	return c, nil
}

// validate converts the raw values into a config, checking every rule.
func validate(raw map[string]*rawValue) (*config, error) {
	c := &config{}
	var err error
	get := func(name string) (flagSpec, string) { return raw[name].spec, raw[name].last() }

	// Booleans first: --version short-circuits the rest.
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"version", &c.version}, {"metrics-enabled", &c.metricsEnabled}, {"local-sts", &c.localSTS}, {"access-log", &c.accessLog}, {"require-tls-upstream", &c.requireTLS}, {"allow-remote-clients", &c.remoteClients}, {"refresh", &c.refresh}} {
		s, v := get(b.name)
		if *b.dst, err = strconv.ParseBool(v); err != nil {
			return nil, invalid(s, v, "want true or false")
		}
	}
	if c.version {
		return c, nil
	}

	s, v := get("listen-addr")
	if err := checkListenAddr(v); err != nil {
		return nil, invalid(s, v, "want host:port (%v)", err)
	}
	c.listenAddr = v

	// Enum values are case-insensitive, as in aws-outbound-jwt-proxy.
	s, v = get("upstream-scheme")
	c.upstreamScheme = strings.ToLower(v)
	if c.upstreamScheme != "http" && c.upstreamScheme != "https" {
		return nil, invalid(s, v, "want http or https")
	}

	s, v = get("upstream-host")
	if v != "" {
		if strings.Contains(v, "://") {
			return nil, invalid(s, v, "want host[:port] without a scheme; set the scheme with --upstream-scheme/UPSTREAM_SCHEME")
		}
		host, _, err := stsauth.ParseHostPort(v)
		if err != nil {
			return nil, invalid(s, v, "want host[:port]: %v", err)
		}
		if stsauth.IsMetadataHost(host) {
			return nil, invalid(s, v, "want a host other than a link-local or instance metadata address")
		}
	}
	c.upstreamHost = v

	s, v = get("host-header")
	if !validHeaderName(v) {
		return nil, invalid(s, v, "want an HTTP header name, or Host to route by the Host line")
	}
	if strings.EqualFold(v, hostHeaderRequestLine) {
		c.hostHeader = hostHeaderRequestLine
	} else {
		c.hostHeader = textproto.CanonicalMIMEHeaderKey(v)
		if c.hostHeader == "Authorization" {
			return nil, invalid(s, v, "want a header other than Authorization, which carries the token")
		}
	}

	s, v = get("token-header")
	if !validHeaderName(v) {
		return nil, invalid(s, v, "want an HTTP header name")
	}
	c.tokenHeader = textproto.CanonicalMIMEHeaderKey(v)
	switch {
	case c.tokenHeader == c.hostHeader:
		return nil, invalid(s, v, "want a header other than --host-header/HOST_HEADER, which names the upstream")
	case reservedTokenHeaders[c.tokenHeader]:
		return nil, invalid(s, v, "want a header that the proxy or HTTP does not manage itself (not Host, Content-Length, Via, X-Forwarded-*, or a hop-by-hop header)")
	}

	s, v = get("token-format")
	if err := stsauth.CheckFormat(v); err != nil {
		return nil, invalid(s, v, "want %s exactly once and no control characters (CR, LF)", stsauth.TokenPlaceholder)
	}
	c.tokenFormat = v

	if rv := raw["allowed-hosts"]; rv.set() {
		for _, p := range rv.vals {
			if p == "" || strings.TrimSpace(p) != p {
				return nil, invalid(rv.spec, rv.String(), "want a comma list of hosts without empty values or white space")
			}
		}
		if slices.Contains(rv.vals, anyHostPattern) {
			if len(rv.vals) > 1 {
				return nil, invalid(rv.spec, rv.String(), "want '*' alone, or hosts without it")
			}
			c.anyHost = true
		} else if c.allowed, err = stsauth.ParseAllowedHosts(rv.vals...); err != nil {
			return nil, invalid(rv.spec, rv.String(), "want host or *.suffix with optional :port (%v)", err)
		}
		if !c.anyHost {
			c.allowedHosts = rv.vals
		}
		if c.allowed != nil && c.upstreamHost != "" && !c.allowed.AllowsURLHost(c.upstreamScheme, c.upstreamHost) {
			s, v = get("upstream-host")
			return nil, invalid(s, v, "want a host that --allowed-hosts/ALLOWED_HOSTS allows")
		}
	}

	if c.requireTLS && c.upstreamScheme == "http" && c.upstreamHost != "" && !c.upstreamLoopback() {
		s, v = get("require-tls-upstream")
		return nil, invalid(s, v, "want false, or --upstream-scheme/UPSTREAM_SCHEME https, or a loopback --upstream-host/UPSTREAM_HOST: %s over plain http is refused", c.upstreamHost)
	}

	s, v = get("upstream-timeout")
	if c.upstreamTimeout, err = parsePositiveDuration(v); err != nil {
		return nil, invalid(s, v, "want a duration more than 0, such as 30s")
	}

	s, v = get("upstream-idle-conns")
	if c.upstreamIdle, err = strconv.Atoi(v); err != nil || c.upstreamIdle < 1 || c.upstreamIdle > 100_000 {
		return nil, invalid(s, v, "want an integer from 1 to 100000")
	}

	if rv := raw["token-audience"]; rv.set() {
		for _, a := range rv.vals {
			if a == "" {
				return nil, invalid(rv.spec, rv.String(), "want non-empty audience values")
			}
			if strings.IndexFunc(a, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
				return nil, invalid(rv.spec, a, "want an audience without white space or control characters")
			}
		}
		if c.audience, err = stsauth.NewAudience(rv.vals...); err != nil {
			return nil, invalid(rv.spec, rv.String(), "want 1 to %d values of at most %d characters", stsauth.MaxAudiences, stsauth.MaxAudienceLength)
		}
		c.audiences = rv.vals
	}

	s, v = get("token-fetch-timeout")
	if c.fetchTimeout, err = parsePositiveDuration(v); err != nil {
		return nil, invalid(s, v, "want a duration more than 0, such as 10s")
	}

	s, v = get("token-signing-algorithm")
	c.signingAlg = strings.ToUpper(v)
	if c.signingAlg != stsauth.RS256 && c.signingAlg != stsauth.ES384 {
		return nil, invalid(s, v, "want %s or %s", stsauth.RS256, stsauth.ES384)
	}

	s, v = get("token-duration")
	c.duration, err = time.ParseDuration(v)
	if err != nil || c.duration < stsauth.MinDuration || c.duration > stsauth.MaxDuration {
		return nil, invalid(s, v, "want 60s to 1h")
	}
	if c.duration%time.Second != 0 {
		return nil, invalid(s, v, "want whole seconds, 60s to 1h")
	}

	skew := raw["token-refresh-skew"]
	s, v = skew.spec, skew.last()
	c.refreshSkew, err = time.ParseDuration(v)
	if err != nil || c.refreshSkew <= 0 {
		return nil, invalid(s, v, "want more than 0 and less than --token-duration (%v)", c.duration)
	}
	if c.refreshSkew >= c.duration {
		if skew.set() {
			return nil, invalid(s, v, "want more than 0 and less than --token-duration (%v)", c.duration)
		}
		// The default skew does not fit a short duration: refresh halfway,
		// as the library does, rather than reject a flag the user never set.
		c.refreshSkew = c.duration / 2
		c.skewHalved = true
	}

	if rv := raw["token-tag"]; rv.set() {
		if c.tags, err = parseTags(rv); err != nil {
			return nil, err
		}
	}

	s, v = get("token-cache-size")
	if c.cacheSize, err = strconv.Atoi(v); err != nil || c.cacheSize < 1 {
		return nil, invalid(s, v, "want an integer of at least 1")
	}

	s, v = get("token-mint-rate")
	if c.mintRate, err = strconv.ParseFloat(v, 64); err != nil || math.IsNaN(c.mintRate) || math.IsInf(c.mintRate, 0) || c.mintRate < 0 {
		return nil, invalid(s, v, "want a number of tokens a second, 0 (no limit) or more")
	}

	s, v = get("token-mint-burst")
	if c.mintBurst, err = strconv.Atoi(v); err != nil || c.mintBurst < 1 {
		return nil, invalid(s, v, "want an integer of at least 1")
	}

	s, v = get("token-fetch-concurrency")
	if c.maxFetches, err = strconv.Atoi(v); err != nil || c.maxFetches < 1 || c.maxFetches > stsauth.MaxMaxConcurrentFetches {
		return nil, invalid(s, v, "want an integer from 1 to %d", stsauth.MaxMaxConcurrentFetches)
	}

	s, v = get("log-level")
	switch strings.ToLower(v) {
	case "debug":
		c.logLevel = slog.LevelDebug
	case "info":
		c.logLevel = slog.LevelInfo
	case "warn":
		c.logLevel = slog.LevelWarn
	case "error":
		c.logLevel = slog.LevelError
	default:
		return nil, invalid(s, v, "want debug, info, warn or error")
	}

	s, v = get("log-format")
	c.logFormat = strings.ToLower(v)
	if c.logFormat != "json" && c.logFormat != "text" {
		return nil, invalid(s, v, "want json or text")
	}

	certSpec, cert := get("tls-cert")
	keySpec, key := get("tls-key")
	switch {
	case cert != "" && key == "":
		return nil, invalid(keySpec, key, "want a key file, since --tls-cert/TLS_CERT is set")
	case cert == "" && key != "":
		return nil, invalid(certSpec, cert, "want a certificate file, since --tls-key/TLS_KEY is set")
	case cert != "":
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, invalid(certSpec, cert, "want a readable PEM certificate matching --tls-key/TLS_KEY (%v)", err)
		}
		c.tlsCert = &pair
	}
	c.tlsCertFile, c.tlsKeyFile = cert, key

	s, v = get("metrics-listen-addr")
	// Empty is valid only where it is the default: no admin listener.
	if err := checkListenAddr(v); err != nil && (v != "" || s.def != "") {
		return nil, invalid(s, v, "want host:port (%v)", err)
	}
	// With metrics disabled no admin listener is bound, so it cannot clash.
	if c.metricsEnabled && v == c.listenAddr && !strings.HasSuffix(v, ":0") {
		return nil, invalid(s, v, "want an address different from --listen-addr/LISTEN_ADDR")
	}
	c.metricsListenAddr = v

	s, v = get("metrics-path")
	if !strings.HasPrefix(v, "/") || v == "/healthz" || v == "/readyz" || strings.ContainsAny(v, " \t\r\n?#") {
		return nil, invalid(s, v, "want a path starting with / other than /healthz and /readyz")
	}
	c.metricsPath = v

	s, v = get("shutdown-delay")
	if c.shutdownDelay, err = time.ParseDuration(v); err != nil || c.shutdownDelay < 0 || c.shutdownDelay > maxShutdownDelay {
		return nil, invalid(s, v, "want a duration from 0s to %v, such as 5s", maxShutdownDelay)
	}

	s, v = get("region")
	if v != "" && !validRegion(v) {
		return nil, &usageError{msg: fmt.Sprintf("invalid --%s %q: want an AWS Region such as us-east-1", s.name, v)}
	}
	c.region = v

	if rv := raw["sts-fallback-regions"]; rv.set() {
		if c.fallbackRegions, err = parseFallbackRegions(rv, c.region); err != nil {
			return nil, err
		}
	}

	s, v = get("shutdown-timeout")
	if c.shutdownTimeout, err = parsePositiveDuration(v); err != nil {
		return nil, invalid(s, v, "want a duration more than 0, such as 15s")
	}

	s, v = get("output-format")
	c.outputFormat = strings.ToLower(v)
	if c.outputFormat != outputJWT && c.outputFormat != outputJSON {
		return nil, invalid(s, v, "want %s or %s", outputJWT, outputJSON)
	}
	s, v = get("output-file")
	if v != "" {
		if fi, err := os.Stat(filepath.Dir(v)); err != nil || !fi.IsDir() {
			return nil, invalid(s, v, "want a file in an existing directory")
		}
		if fi, err := os.Stat(v); err == nil && !fi.Mode().IsRegular() {
			return nil, invalid(s, v, "want a regular file or a new one")
		}
	}
	c.outputFile = v
	if c.refresh && c.outputFile == "" {
		s, v = get("refresh")
		return nil, invalid(s, v, "want --output-file/%s too: the token file to keep fresh", raw["output-file"].spec.env())
	}
	return c, nil
}

// parseTags parses the key=value values of a tag flag, within the limits
// STS sets on session tags.
func parseTags(rv *rawValue) (map[string]string, error) {
	tags := make(map[string]string, len(rv.vals))
	for _, kv := range rv.vals {
		k, val, ok := strings.Cut(kv, "=")
		switch {
		case !ok || k == "":
			return nil, invalid(rv.spec, kv, "want key=value")
		case utf8.RuneCountInString(k) > stsauth.MaxTagKeyLength:
			return nil, invalid(rv.spec, kv, "want a key of 1 to %d characters", stsauth.MaxTagKeyLength)
		case utf8.RuneCountInString(val) > stsauth.MaxTagValueLength:
			return nil, invalid(rv.spec, kv, "want a value of at most %d characters", stsauth.MaxTagValueLength)
		}
		if _, dup := tags[k]; dup {
			return nil, invalid(rv.spec, kv, "want each key once")
		}
		tags[k] = val
	}
	if len(tags) > stsauth.MaxTags {
		return nil, invalid(rv.spec, rv.String(), "want at most %d tags", stsauth.MaxTags)
	}
	return tags, nil
}

// reservedTokenHeaders are the headers --token-header may not name: HTTP
// framing, hop-by-hop headers (which never reach the upstream, and
// Proxy-Authorization would go to a forward proxy), and the ones the proxy
// sets itself. Keys are canonical.
var reservedTokenHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Te": true, "Trailer": true,
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Upgrade": true,
	"Proxy-Authorization": true, "Proxy-Authenticate": true,
	"Via": true, "Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
}

// parsePositiveDuration parses a Go duration that must be more than 0.
func parsePositiveDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, errors.New("not positive")
	}
	return d, nil
}

// checkListenAddr checks a host:port to listen on; the host may be empty
// (all interfaces) and the port 0 (any free port).
func checkListenAddr(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New("missing port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port out of range 0 to 65535")
	}
	return nil
}

// validRegion reports whether v looks like an AWS Region name, such as
// us-east-1 or us-gov-west-1: lowercase letters, digits and dashes.
func validRegion(v string) bool {
	if len(v) > 32 || strings.Trim(v, "-") != v {
		return false
	}
	return strings.Trim(v, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
}

// flagSpecNamed returns the spec of the flag named name.
func flagSpecNamed(name string) flagSpec {
	return flagSpecs[slices.IndexFunc(flagSpecs, func(s flagSpec) bool { return s.name == name })]
}

// fallbackRegion is one entry of --sts-fallback-regions.
type fallbackRegion struct {
	region   string
	endpoint string // the STS endpoint URL; empty for the Region's own
}

// parseFallbackRegions validates --sts-fallback-regions: REGION or
// REGION=URL entries, distinct, none equal to primary (--region, if set).
func parseFallbackRegions(rv *rawValue, primary string) ([]fallbackRegion, error) {
	var out []fallbackRegion
	for _, v := range rv.vals {
		region, endpoint, hasURL := strings.Cut(v, "=")
		if !validRegion(region) || region == "" {
			return nil, invalid(rv.spec, v, "want an AWS Region such as us-west-2, optionally =ENDPOINT_URL, in a comma list without empty values or white space")
		}
		if hasURL {
			if err := checkEndpointURL(endpoint); err != nil {
				return nil, invalid(rv.spec, v, "want REGION=URL with an https URL of an STS endpoint (http only on a loopback host): %v", err)
			}
		}
		if region == primary {
			return nil, invalid(rv.spec, v, "want Regions other than the primary, --region %s", primary)
		}
		if slices.ContainsFunc(out, func(f fallbackRegion) bool { return f.region == region }) {
			return nil, invalid(rv.spec, rv.String(), "want distinct Regions: %s is given twice", region)
		}
		out = append(out, fallbackRegion{region: region, endpoint: endpoint})
	}
	return out, nil
}

// checkEndpointURL checks the URL of an STS endpoint: https, or http on a
// loopback host; a host and nothing else but a path.
func checkEndpointURL(v string) error {
	u, err := url.Parse(v)
	switch {
	case err != nil:
		return err
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return errors.New("want scheme://host[:port][/path]")
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && stsauth.IsLoopbackHost(u.Hostname()):
		return nil
	}
	return errors.New("want https, or http to a loopback host")
}

// validHeaderName reports whether v is a valid HTTP header field name (an
// RFC 9110 token).
func validHeaderName(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
