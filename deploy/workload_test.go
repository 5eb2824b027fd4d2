package deploy_test

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// This file holds what the kustomize and Helm tests share: decoding
// rendered objects strictly into their API types, and the invariants every
// stsproxy workload keeps, whichever tool rendered it.

// clientLabel is the label a pod needs to reach the shared proxy.
const clientLabel = "stsproxy.stsauth.io/client"

// namespaceNameLabel is the label the API server sets on every namespace to
// its name; a NetworkPolicy selecting namespaces by it cannot be fooled by
// whoever labels a namespace.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// objects are the decoded objects of one rendered kustomization or chart.
type objects struct {
	namespaces      []*corev1.Namespace
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	pdbs            []*policyv1.PodDisruptionBudget
	networkPolicies []*networkingv1.NetworkPolicy
	serviceAccounts []*corev1.ServiceAccount
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	podMonitors     []*monitoringv1.PodMonitor
	serviceMonitors []*monitoringv1.ServiceMonitor

	namespaceOf map[string]string // "Kind name" → namespace, for namespaced kinds
}

// add decodes one object strictly (unknown or duplicate fields fail) into
// its Kubernetes API type. A kind this test does not know fails too.
func (objs *objects) add(t *testing.T, source string, y []byte) {
	t.Helper()
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
	}
	require.NoError(t, yaml.Unmarshal(y, &head), "%s:\n%s", source, y)
	tm := head.TypeMeta
	if tm.Kind != "Namespace" {
		if objs.namespaceOf == nil {
			objs.namespaceOf = map[string]string{}
		}
		objs.namespaceOf[tm.Kind+" "+head.Metadata.Name] = head.Metadata.Namespace
	}
	what := fmt.Sprintf("%s %s in %s", tm.APIVersion, tm.Kind, source)
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		decodeStrict(t, what, y, &objs.namespaces)
	case "apps/v1 Deployment":
		decodeStrict(t, what, y, &objs.deployments)
	case "v1 Service":
		decodeStrict(t, what, y, &objs.services)
	case "policy/v1 PodDisruptionBudget":
		decodeStrict(t, what, y, &objs.pdbs)
	case "networking.k8s.io/v1 NetworkPolicy":
		decodeStrict(t, what, y, &objs.networkPolicies)
	case "v1 ServiceAccount":
		decodeStrict(t, what, y, &objs.serviceAccounts)
	case "autoscaling/v2 HorizontalPodAutoscaler":
		decodeStrict(t, what, y, &objs.hpas)
	case "monitoring.coreos.com/v1 PodMonitor":
		decodeStrict(t, what, y, &objs.podMonitors)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		decodeStrict(t, what, y, &objs.serviceMonitors)
	default:
		t.Errorf("%s: unexpected %s %s", source, tm.APIVersion, tm.Kind)
	}
}

// decodeStrict decodes y strictly into a new T and appends it to list.
func decodeStrict[T any](t *testing.T, what string, y []byte, list *[]*T) {
	t.Helper()
	o := new(T)
	require.NoError(t, yaml.UnmarshalStrict(y, o), "%s:\n%s", what, y)
	*list = append(*list, o)
}

// proxyFlags is what the tests need from one stsproxy command's flags.
type proxyFlags struct {
	command []string        // the subcommand, before the flags; empty for the proxy
	bools   map[string]bool // flag name → is a boolean switch
	env     map[string]string
}

// usageFlagRE matches a flag line of "stsproxy --help":
// "  --token-audience value (env TOKEN_AUDIENCE)".
var usageFlagRE = regexp.MustCompile(`(?m)^  --([a-z0-9-]+)( value)?(?: \(env ([A-Z0-9_]+)\))?$`)

// stsproxyFlags reads the flag definitions from the real binary's usage,
// so a container's arguments are checked against the flags it really has:
// the proxy's, or those of the subcommand command.
func stsproxyFlags(t *testing.T, bin string, command ...string) proxyFlags {
	t.Helper()
	out, err := exec.Command(bin, append(slices.Clone(command), "--help")...).Output()
	require.NoError(t, err)
	pf := proxyFlags{command: command, bools: map[string]bool{}, env: map[string]string{}}
	for _, m := range usageFlagRE.FindAllStringSubmatch(string(out), -1) {
		pf.bools[m[1]] = m[2] == ""
		pf.env[m[1]] = m[3]
	}
	require.Contains(t, pf.bools, "metrics-listen-addr", "stsproxy %v --help:\n%s", command, out)
	return pf
}

// isInbound reports whether an stsproxy container runs stsproxy inbound.
func isInbound(c corev1.Container) bool { return len(c.Args) > 0 && c.Args[0] == "inbound" }

// envValue resolves a container's environment variable as the kubelet
// would: a literal, or a resource field of the container itself. Other
// sources fail the test, since their value cannot be checked.
func envValue(t *testing.T, c corev1.Container, e corev1.EnvVar) string {
	t.Helper()
	if e.ValueFrom == nil {
		return e.Value
	}
	ref := e.ValueFrom.ResourceFieldRef
	require.NotNil(t, ref, "container %s env %s: only literals and resourceFieldRef can be checked", c.Name, e.Name)
	require.Contains(t, []string{"", c.Name}, ref.ContainerName, "container %s env %s: the container's own resources", c.Name, e.Name)
	name, ok := strings.CutPrefix(ref.Resource, "limits.")
	require.True(t, ok, "container %s env %s: a limit, got %s", c.Name, e.Name, ref.Resource)
	q, ok := c.Resources.Limits[corev1.ResourceName(name)]
	require.True(t, ok, "container %s env %s: the container sets the %s limit", c.Name, e.Name, name)
	div := int64(1)
	if !ref.Divisor.IsZero() {
		div = ref.Divisor.Value()
	}
	return strconv.FormatInt((q.Value()+div-1)/div, 10)
}

// effective returns the container's value of each flag: its argument, else
// its environment variable, else "" (the default). A boolean is "true" or
// "false" when set.
func (pf proxyFlags) effective(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	fset := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	vals := map[string]fmt.Stringer{}
	for name, isBool := range pf.bools {
		if isBool {
			vals[name] = boolValue{fset.Bool(name, false, "")}
			continue
		}
		vals[name] = stringValue{fset.String(name, "", "")}
	}
	args, ok := cutPrefix(c.Args, pf.command)
	require.True(t, ok, "container %s args %q start with %q", c.Name, c.Args, pf.command)
	require.NoError(t, fset.Parse(args), "container %s args %q against stsproxy's flags", c.Name, c.Args)
	require.Empty(t, fset.Args(), "container %s: arguments that are not flags", c.Name)
	set := map[string]bool{}
	fset.Visit(func(f *flag.Flag) { set[f.Name] = true })
	got := map[string]string{}
	for name, v := range vals {
		got[name] = v.String()
		if !set[name] {
			got[name] = ""
			for _, e := range c.Env {
				if e.Name == pf.env[name] {
					got[name] = envValue(t, c, e)
				}
			}
		}
	}
	return got
}

// stringValue and boolValue print a parsed flag for effective.
type (
	stringValue struct{ p *string }
	boolValue   struct{ p *bool }
)

func (v stringValue) String() string { return *v.p }
func (v boolValue) String() string   { return strconv.FormatBool(*v.p) }

// cutPrefix returns s without prefix, if s starts with it.
func cutPrefix(s, prefix []string) ([]string, bool) {
	if len(s) < len(prefix) || !slices.Equal(s[:len(prefix)], prefix) {
		return nil, false
	}
	return s[len(prefix):], true
}

// validateWithBinary runs "stsproxy policy" (which takes every proxy flag
// and validates them like the proxy) with the container's args and env, so
// a value the proxy would reject at startup fails the test. GOMEMLIMIT is
// checked by the Go runtime itself: a value it cannot parse kills stsproxy.
func validateWithBinary(t *testing.T, bin string, validate []string, pf proxyFlags, c corev1.Container) {
	t.Helper()
	args, ok := cutPrefix(c.Args, pf.command)
	require.True(t, ok, "container %s args %q start with %q", c.Name, c.Args, pf.command)
	cmd := exec.Command(bin, append(slices.Clone(validate), args...)...)
	cmd.Env = []string{"HOME=" + t.TempDir()}
	for _, e := range c.Env {
		cmd.Env = append(cmd.Env, e.Name+"="+envValue(t, c, e))
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Run(), "stsproxy rejects container %s's configuration: %s", c.Name, stderr.String())
}

// port returns the port of a listen address, or a default.
func port(t *testing.T, addr, def string) int32 {
	t.Helper()
	if addr == "" {
		addr = def
	}
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return int32(n)
}

// duration parses a duration flag's value, or its default.
func duration(t *testing.T, v string, def time.Duration) time.Duration {
	t.Helper()
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err)
	return d
}

// containerPort resolves a probe's or service's target port (a number or
// a port name) against the container's ports.
func containerPort(t *testing.T, c corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, p.StrVal)
	return 0
}

// checkPodSecurity checks the security and resource invariants of every
// container in a pod template.
func checkPodSecurity(t *testing.T, name string, spec corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	require.NotNil(t, psc, "%s: pod securityContext", name)
	assert.Equal(t, ptrTrue, psc.RunAsNonRoot, "%s: pod runAsNonRoot", name)
	require.NotNil(t, psc.SeccompProfile, "%s: pod seccompProfile", name)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, psc.SeccompProfile.Type)
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		sc := c.SecurityContext
		require.NotNil(t, sc, "%s/%s: securityContext", name, c.Name)
		assert.Equal(t, ptrTrue, sc.RunAsNonRoot, "%s/%s: runAsNonRoot", name, c.Name)
		assert.Equal(t, ptrTrue, sc.ReadOnlyRootFilesystem, "%s/%s: readOnlyRootFilesystem", name, c.Name)
		assert.Equal(t, ptrFalse, sc.AllowPrivilegeEscalation, "%s/%s: allowPrivilegeEscalation", name, c.Name)
		assert.Nil(t, sc.Privileged, "%s/%s: privileged", name, c.Name)
		if assert.NotNil(t, sc.Capabilities, "%s/%s: capabilities", name, c.Name) {
			assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, "%s/%s: drop ALL", name, c.Name)
			assert.Empty(t, sc.Capabilities.Add, "%s/%s: no capability added", name, c.Name)
		}
		if assert.NotNil(t, sc.SeccompProfile, "%s/%s: seccompProfile", name, c.Name) {
			assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type)
		}
		if sc.RunAsUser != nil {
			assert.NotZero(t, *sc.RunAsUser, "%s/%s: runAsUser", name, c.Name)
		}
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			assert.Contains(t, c.Resources.Requests, res, "%s/%s: %s request", name, c.Name, res)
			assert.Contains(t, c.Resources.Limits, res, "%s/%s: %s limit", name, c.Name, res)
		}
	}
}

var (
	ptrTrue  = func() *bool { b := true; return &b }()
	ptrFalse = func() *bool { b := false; return &b }()
)

// stsproxyContainers are the stsproxy containers of a pod template (named
// stsproxy, or stsproxy-SOMETHING), each with whether it is a native
// sidecar (an init container).
func stsproxyContainers(spec corev1.PodSpec) (cs []corev1.Container, sidecar []bool) {
	is := func(c corev1.Container) bool { return c.Name == "stsproxy" || strings.HasPrefix(c.Name, "stsproxy-") }
	for _, c := range spec.InitContainers {
		if is(c) {
			cs, sidecar = append(cs, c), append(sidecar, true)
		}
	}
	for _, c := range spec.Containers {
		if is(c) {
			cs, sidecar = append(cs, c), append(sidecar, false)
		}
	}
	return cs, sidecar
}

// checkProbes checks that the probes reach the admin listener the flags
// configure, on the right paths.
func checkProbes(t *testing.T, c corev1.Container, flags map[string]string) {
	t.Helper()
	admin := port(t, flags["metrics-listen-addr"], ":9090")
	host, _, _ := net.SplitHostPort(flags["metrics-listen-addr"])
	assert.NotContains(t, []string{"127.0.0.1", "localhost", "::1"}, host, "the kubelet probes the pod IP, not loopback")
	assert.NotEqual(t, "false", flags["metrics-enabled"], "with metrics disabled there is no /healthz or /readyz")
	probes := []struct {
		name, path string
		p          *corev1.Probe
	}{
		{"liveness", "/healthz", c.LivenessProbe},
		{"readiness", "/readyz", c.ReadinessProbe},
		{"startup", "/readyz", c.StartupProbe},
	}
	for _, pr := range probes {
		if pr.p == nil {
			assert.NotEqual(t, "liveness", pr.name, "a liveness probe")
			assert.NotEqual(t, "readiness", pr.name, "a readiness probe")
			continue
		}
		require.NotNil(t, pr.p.HTTPGet, "%s probe is httpGet", pr.name)
		assert.Equal(t, pr.path, pr.p.HTTPGet.Path, "%s probe path", pr.name)
		assert.Equal(t, admin, containerPort(t, c, pr.p.HTTPGet.Port), "%s probe port is --metrics-listen-addr's", pr.name)
	}
}

// checkAWSEnv checks that the container takes its credentials from the
// pod's role only, and sizes the Go heap to its memory limit.
func checkAWSEnv(t *testing.T, c corev1.Container) {
	t.Helper()
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	assert.Equal(t, "true", env["AWS_EC2_METADATA_DISABLED"].Value,
		"container %s: Pod Identity or IRSA, never a silent fallback to the node's instance role", c.Name)
	assert.NotEmpty(t, env["AWS_REGION"].Value, "container %s: GetWebIdentityToken is regional", c.Name)
	checkGoMemLimit(t, c)
}

// checkGoMemLimit checks that the container sizes the Go heap to its
// memory limit.
func checkGoMemLimit(t *testing.T, c corev1.Container) {
	t.Helper()
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	if gml, ok := env["GOMEMLIMIT"]; assert.True(t, ok, "container %s: GOMEMLIMIT", c.Name) {
		if assert.NotNil(t, gml.ValueFrom, "container %s: GOMEMLIMIT from the downward API", c.Name) &&
			assert.NotNil(t, gml.ValueFrom.ResourceFieldRef, "container %s: GOMEMLIMIT from resourceFieldRef", c.Name) {
			assert.Equal(t, "limits.memory", gml.ValueFrom.ResourceFieldRef.Resource, "container %s: GOMEMLIMIT is the memory limit", c.Name)
			v := envValue(t, c, gml)
			assert.Equal(t, c.Resources.Limits.Memory().String(), resourceString(t, v), "container %s: GOMEMLIMIT in bytes", c.Name)
		}
	}
}

// resourceString parses a byte count as the kubelet writes it and formats
// it as a quantity, for messages that read like the manifest.
func resourceString(t *testing.T, v string) string {
	t.Helper()
	n, err := strconv.ParseInt(v, 10, 64)
	require.NoError(t, err, "GOMEMLIMIT %q is a byte count", v)
	for _, u := range []struct {
		s string
		n int64
	}{{"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n%u.n == 0 {
			return fmt.Sprint(n/u.n) + u.s
		}
	}
	return v
}

// checkGracePeriod checks that the pod's grace period covers the proxy's
// drain: --shutdown-delay (keep serving while endpoints update), then
// --shutdown-timeout (in-flight requests finish), with a second to spare.
func checkGracePeriod(t *testing.T, spec corev1.PodSpec, flags map[string]string) {
	t.Helper()
	drain := duration(t, flags["shutdown-delay"], 0) + duration(t, flags["shutdown-timeout"], 15*time.Second)
	grace := 30 * time.Second
	if spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	}
	assert.Greater(t, grace, drain,
		"terminationGracePeriodSeconds %v leaves --shutdown-delay plus --shutdown-timeout (%v) to finish", grace, drain)
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
			// A preStop hook runs before SIGTERM and inside the same grace period.
			if s := c.Lifecycle.PreStop.Sleep; s != nil {
				assert.Greater(t, grace, drain+time.Duration(s.Seconds)*time.Second, "grace period covers preStop sleep and the drain")
			}
		}
	}
}

// checkSidecar checks the native sidecar's contract: it restarts for the
// pod's life, listens on loopback only, pins the upstream and the audience,
// gates the application's start on its first token, and no other pod
// reaches its admin port.
func checkSidecar(t *testing.T, d *appsv1.Deployment, c corev1.Container, flags map[string]string, objs *objects) {
	t.Helper()
	require.NotNil(t, c.RestartPolicy, "a native sidecar has restartPolicy")
	assert.Equal(t, corev1.ContainerRestartPolicyAlways, *c.RestartPolicy)
	assert.Equal(t, "127.0.0.1:8080", flags["listen-addr"], "the sidecar is reachable from its pod only")
	assert.NotEqual(t, "true", flags["allow-remote-clients"], "the sidecar has no remote clients")
	assert.NotEmpty(t, flags["upstream-host"], "pinned upstream")
	assert.NotEmpty(t, flags["token-audience"], "static audience")
	assert.NotNil(t, c.StartupProbe, "a startup probe holds the application until the first token is cached")
	for _, p := range c.Ports {
		assert.NotEqual(t, port(t, flags["listen-addr"], ""), p.ContainerPort, "the loopback proxy port is not declared")
	}
	admin := port(t, flags["metrics-listen-addr"], ":9090")
	pols := policiesFor(t, d, objs, networkingv1.PolicyTypeIngress)
	require.NotEmpty(t, pols, "a NetworkPolicy isolates %s's ingress", d.Name)
	for _, np := range pols {
		for _, rule := range np.Spec.Ingress {
			assert.False(t, portsInclude(t, rule.Ports, c, admin, corev1.ProtocolTCP),
				"NetworkPolicy %s opens the sidecar's admin port %d to other pods", np.Name, admin)
		}
	}
}

// checkInboundSidecar checks stsproxy inbound's contract as the API's
// native sidecar: it restarts for the pod's life, listens on the pod's
// interfaces and forwards to the API on loopback, holds the API's start
// until it has the issuers' keys, and is the only way in: the Service and
// the NetworkPolicy open its port, neither the API's nor the admin port.
func checkInboundSidecar(t *testing.T, d *appsv1.Deployment, c corev1.Container, flags map[string]string, objs *objects) {
	t.Helper()
	require.NotNil(t, c.RestartPolicy, "a native sidecar has restartPolicy")
	assert.Equal(t, corev1.ContainerRestartPolicyAlways, *c.RestartPolicy)
	assert.NotEmpty(t, flags["issuer"], "trusted issuers")
	assert.NotEmpty(t, flags["audience"], "accepted audiences")
	assert.NotEqual(t, "true", flags["allow-insecure-issuer"], "no http issuers in a cluster")
	assert.NotEqual(t, "true", flags["forward-token"], "the token stops at the sidecar")
	assert.NotNil(t, c.StartupProbe, "a startup probe holds the API until the issuers' keys are in")
	listen := port(t, flags["listen-addr"], ":8443")
	host, _, err := net.SplitHostPort(flags["listen-addr"])
	require.NoError(t, err)
	assert.Contains(t, []string{"", "0.0.0.0", "::"}, host, "the sidecar listens on the pod's interfaces, for the Service")
	admin := port(t, flags["metrics-listen-addr"], ":9090")
	up, err := url.Parse(flags["upstream"])
	require.NoError(t, err, "--upstream")
	assert.Contains(t, []string{"127.0.0.1", "localhost", "::1"}, up.Hostname(), "the API is reached on loopback, inside the pod")
	upPort := int32(80)
	if up.Port() != "" {
		n, err := strconv.Atoi(up.Port())
		require.NoError(t, err)
		upPort = int32(n)
	}
	for _, other := range d.Spec.Template.Spec.Containers {
		for _, p := range other.Ports {
			assert.NotEqual(t, upPort, p.ContainerPort, "container %s declares the API's loopback port %d", other.Name, upPort)
		}
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	var toSidecar int
	for _, svc := range objs.services {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			continue
		}
		for _, sp := range svc.Spec.Ports {
			target := containerPort(t, c, sp.TargetPort)
			assert.Equal(t, listen, target, "Service %s targets the sidecar's --listen-addr port, nothing else", svc.Name)
			if target == listen {
				toSidecar++
			}
		}
	}
	assert.Equal(t, 1, toSidecar, "one Service port reaches the sidecar")
	pols := policiesFor(t, d, objs, networkingv1.PolicyTypeIngress)
	require.NotEmpty(t, pols, "a NetworkPolicy isolates %s's ingress", d.Name)
	var opened bool
	for _, np := range pols {
		for _, rule := range np.Spec.Ingress {
			opened = opened || portsInclude(t, rule.Ports, c, listen, corev1.ProtocolTCP)
			assert.False(t, portsInclude(t, rule.Ports, c, admin, corev1.ProtocolTCP),
				"NetworkPolicy %s opens the sidecar's admin port %d to other pods", np.Name, admin)
			assert.False(t, portsInclude(t, rule.Ports, c, upPort, corev1.ProtocolTCP),
				"NetworkPolicy %s opens the API's port %d", np.Name, upPort)
		}
	}
	assert.True(t, opened, "a NetworkPolicy admits callers to the sidecar's port %d", listen)
}

// checkInbound checks stsproxy inbound as its own Deployment in front of a
// service (the Helm chart's): what it verifies, that it drains like the
// shared proxy, and that only the monitoring namespace reaches its admin
// port.
func checkInbound(t *testing.T, d *appsv1.Deployment, c corev1.Container, flags map[string]string, objs *objects) {
	t.Helper()
	for _, f := range []string{"upstream", "issuer", "audience"} {
		assert.NotEmpty(t, flags[f], "--%s is required", f)
	}
	assert.NotEqual(t, "true", flags["allow-insecure-issuer"], "no http issuers in a cluster")
	assert.GreaterOrEqual(t, minReplicas(t, d, objs), int32(2), "replicas")
	assert.Positive(t, duration(t, flags["shutdown-delay"], 0), "--shutdown-delay keeps serving while the endpoints controller removes the pod")
	listen := port(t, flags["listen-addr"], ":8443")
	admin := port(t, flags["metrics-listen-addr"], ":9090")
	podLabels := labels.Set(d.Spec.Template.Labels)
	var svcs int
	for _, svc := range objs.services {
		if labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			svcs++
			for _, sp := range svc.Spec.Ports {
				assert.Equal(t, listen, containerPort(t, c, sp.TargetPort), "Service %s targets --listen-addr's port", svc.Name)
			}
		}
	}
	assert.Equal(t, 1, svcs, "one Service selects the verifier's pods")
	pols := policiesFor(t, d, objs, networkingv1.PolicyTypeIngress)
	require.NotEmpty(t, pols, "a NetworkPolicy isolates %s's ingress", d.Name)
	for _, np := range pols {
		for _, rule := range np.Spec.Ingress {
			if !portsInclude(t, rule.Ports, c, admin, corev1.ProtocolTCP) {
				continue
			}
			require.NotEmpty(t, rule.From, "NetworkPolicy %s opens the admin port to everyone", np.Name)
			assert.False(t, portsInclude(t, rule.Ports, c, listen, corev1.ProtocolTCP), "NetworkPolicy %s: one rule for the verifier's port, another for the admin port", np.Name)
			for _, p := range rule.From {
				require.NotNil(t, p.NamespaceSelector, "NetworkPolicy %s: admin port peers name their namespace", np.Name)
				assert.Len(t, namespaceNames(t, p.NamespaceSelector), 1, "NetworkPolicy %s: the admin port admits one monitoring namespace, by name", np.Name)
			}
		}
	}
}

// checkScrapeAnnotations checks the prometheus.io pod annotations, for a
// Prometheus that discovers pods by annotation: on the admin port and
// --metrics-path, and never on a sidecar, whose admin port no other pod
// reaches.
func checkScrapeAnnotations(t *testing.T, d *appsv1.Deployment, c corev1.Container, flags map[string]string, sidecar bool) {
	t.Helper()
	ann := d.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" {
		return
	}
	assert.False(t, sidecar, "%s: a sidecar's admin port is closed to Prometheus, so no scrape annotation", d.Name)
	assert.Equal(t, strconv.Itoa(int(port(t, flags["metrics-listen-addr"], ":9090"))), ann["prometheus.io/port"], "%s: prometheus.io/port is the admin port", d.Name)
	path := flags["metrics-path"]
	if path == "" {
		path = "/metrics"
	}
	assert.Equal(t, path, ann["prometheus.io/path"], "%s: prometheus.io/path is --metrics-path", d.Name)
}

// minReplicas is the fewest replicas a Deployment runs: its replicas, or
// the minimum of the HorizontalPodAutoscaler that scales it, which then
// owns the field.
func minReplicas(t *testing.T, d *appsv1.Deployment, objs *objects) int32 {
	t.Helper()
	for _, h := range objs.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind == "Deployment" && ref.Name == d.Name {
			assert.Nil(t, d.Spec.Replicas, "an autoscaled Deployment leaves replicas to the autoscaler, or every apply resets it")
			require.NotNil(t, h.Spec.MinReplicas)
			assert.GreaterOrEqual(t, h.Spec.MaxReplicas, *h.Spec.MinReplicas)
			return *h.Spec.MinReplicas
		}
	}
	require.NotNil(t, d.Spec.Replicas, "%s: replicas, or an autoscaler", d.Name)
	return *d.Spec.Replicas
}

// checkSharedProxy checks the shared proxy's Deployment against its
// Services, PodDisruptionBudget, autoscaler, monitors and NetworkPolicies.
func checkSharedProxy(t *testing.T, d *appsv1.Deployment, c corev1.Container, flags map[string]string, objs *objects) {
	t.Helper()
	podLabels := labels.Set(d.Spec.Template.Labels)
	proxyPort := port(t, flags["listen-addr"], ":8080")
	adminPort := port(t, flags["metrics-listen-addr"], ":9090")
	replicas := minReplicas(t, d, objs)
	assert.GreaterOrEqual(t, replicas, int32(2), "replicas")
	assert.Empty(t, flags["upstream-host"], "the shared proxy routes by header")
	assert.NotEmpty(t, flags["allowed-hosts"], "header routing needs --allowed-hosts")
	assert.Positive(t, duration(t, flags["shutdown-delay"], 0), "--shutdown-delay keeps serving while the endpoints controller removes the pod")
	assert.Equal(t, "true", flags["allow-remote-clients"], "the shared proxy says its clients are remote, behind its NetworkPolicy")

	var proxySvcs int
	for _, svc := range objs.services {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
			continue
		}
		require.NotEmpty(t, svc.Spec.Ports)
		targets := map[int32]bool{}
		for _, sp := range svc.Spec.Ports {
			targets[containerPort(t, c, sp.TargetPort)] = true
		}
		assert.False(t, targets[proxyPort] && targets[adminPort], "Service %s mixes the proxy and admin ports: clients would reach /metrics", svc.Name)
		for p := range targets {
			assert.Contains(t, []int32{proxyPort, adminPort}, p, "Service %s targets --listen-addr's or --metrics-listen-addr's port", svc.Name)
		}
		if targets[proxyPort] {
			proxySvcs++
		}
	}
	assert.Equal(t, 1, proxySvcs, "one Service selects the proxy pods on the proxy port")

	var pdbs int
	for _, pdb := range objs.pdbs {
		sel, err := metav1Selector(pdb.Spec.Selector)
		require.NoError(t, err)
		if !sel.Matches(podLabels) {
			continue
		}
		pdbs++
		if mu := pdb.Spec.MinAvailable; mu != nil {
			assert.Less(t, mu.IntValue(), int(replicas), "minAvailable below replicas, so a node can drain")
		} else if assert.NotNil(t, pdb.Spec.MaxUnavailable, "PodDisruptionBudget %s: minAvailable or maxUnavailable", pdb.Name) {
			assert.NotZero(t, pdb.Spec.MaxUnavailable.IntValue(), "maxUnavailable above 0, so a node can drain")
		}
	}
	assert.Equal(t, 1, pdbs, "one PodDisruptionBudget covers the proxy pods")

	checkSharedProxyIngress(t, d, c, proxyPort, adminPort, flags, objs)
}

// checkSharedProxyIngress checks who reaches the shared proxy: pods with
// the client label in the listed namespaces reach the proxy port, Prometheus
// in the monitoring namespace reaches the admin port (and scrapes it, when a
// monitor is rendered), and nobody else reaches either.
func checkSharedProxyIngress(t *testing.T, d *appsv1.Deployment, c corev1.Container, proxyPort, adminPort int32, flags map[string]string, objs *objects) {
	t.Helper()
	pols := policiesFor(t, d, objs, networkingv1.PolicyTypeIngress)
	require.NotEmpty(t, pols, "a NetworkPolicy isolates %s's ingress", d.Name)
	type peer struct {
		ns  string
		pod labels.Set
	}
	var clients, scrapers []peer
	for _, np := range pols {
		require.NotEmpty(t, np.Spec.Ingress, "NetworkPolicy %s", np.Name)
		for _, rule := range np.Spec.Ingress {
			require.NotEmpty(t, rule.From, "an ingress rule without from admits everyone")
			require.NotEmpty(t, rule.Ports, "an ingress rule names its ports")
			toProxy := portsInclude(t, rule.Ports, c, proxyPort, corev1.ProtocolTCP)
			toAdmin := portsInclude(t, rule.Ports, c, adminPort, corev1.ProtocolTCP)
			assert.False(t, toProxy && toAdmin, "NetworkPolicy %s: one rule for the proxy port, another for the admin port", np.Name)
			assert.True(t, toProxy || toAdmin, "NetworkPolicy %s opens a port that is neither the proxy's nor the admin's", np.Name)
			for _, p := range rule.From {
				assert.Nil(t, p.IPBlock, "peers are admitted by namespace and label, not address")
				require.NotNil(t, p.NamespaceSelector, "every peer names its namespaces: a podSelector alone admits the policy's namespace, an empty namespaceSelector every namespace")
				names := namespaceNames(t, p.NamespaceSelector)
				require.NotEmpty(t, names, "every peer selects namespaces by %s, which only the API server sets", namespaceNameLabel)
				require.NotNil(t, p.PodSelector, "every peer selects pods by label too")
				want := map[string]string{}
				if toProxy {
					assert.Equal(t, "true", p.PodSelector.MatchLabels[clientLabel], "clients need the %s label", clientLabel)
				}
				for k, v := range p.PodSelector.MatchLabels {
					want[k] = v
				}
				for _, ns := range names {
					if toProxy {
						clients = append(clients, peer{ns, want})
					} else {
						scrapers = append(scrapers, peer{ns, want})
					}
				}
			}
		}
	}
	require.NotEmpty(t, clients, "some namespace's clients reach the proxy port")
	require.NotEmpty(t, scrapers, "the monitoring namespace reaches the admin port")
	admits := func(ns string, pod labels.Set, p int32) bool {
		for _, np := range pols {
			if ingressAdmits(t, np, c, ns, pod, p) {
				return true
			}
		}
		return false
	}
	for _, cl := range clients {
		assert.True(t, admits(cl.ns, cl.pod, proxyPort), "a client in %s reaches the proxy port", cl.ns)
		assert.False(t, admits(cl.ns, cl.pod, adminPort), "a client in %s does not reach the admin port", cl.ns)
		unlabelled := labels.Set{}
		for k, v := range cl.pod {
			if k != clientLabel {
				unlabelled[k] = v
			}
		}
		assert.False(t, admits(cl.ns, unlabelled, proxyPort), "a pod in %s without %s does not reach the proxy", cl.ns, clientLabel)
		assert.False(t, admits("not-listed", cl.pod, proxyPort), "a pod with %s in a namespace not listed does not reach the proxy", clientLabel)
		assert.False(t, admits(d.Namespace, cl.pod, proxyPort) && !slices.ContainsFunc(clients, func(p peer) bool { return p.ns == d.Namespace }),
			"a pod with %s in the proxy's own namespace reaches the proxy only if that namespace is listed", clientLabel)
	}
	for _, sc := range scrapers {
		assert.True(t, admits(sc.ns, sc.pod, adminPort), "Prometheus in %s reaches the admin port", sc.ns)
		assert.False(t, admits(sc.ns, sc.pod, proxyPort), "Prometheus in %s does not reach the proxy port", sc.ns)
	}

	// What scrapes the admin port is what the policy admits, and something
	// does: scrape annotations, or a monitor of the Prometheus Operator.
	assert.True(t, d.Spec.Template.Annotations["prometheus.io/scrape"] == "true" || len(objs.podMonitors)+len(objs.serviceMonitors) > 0,
		"%s: the admin port is scraped, through prometheus.io annotations or a PodMonitor or ServiceMonitor", d.Name)
	metricsPath := flags["metrics-path"]
	if metricsPath == "" {
		metricsPath = "/metrics"
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	for _, pm := range objs.podMonitors {
		sel, err := metav1Selector(&pm.Spec.Selector)
		require.NoError(t, err)
		if !sel.Matches(podLabels) {
			continue
		}
		assert.Equal(t, d.Namespace, pm.Namespace, "PodMonitor %s beside the Deployment (it selects pods in its own namespace)", pm.Name)
		require.NotEmpty(t, pm.Spec.PodMetricsEndpoints)
		for _, ep := range pm.Spec.PodMetricsEndpoints {
			require.NotNil(t, ep.Port, "PodMonitor %s endpoint names a port", pm.Name)
			assert.Equal(t, adminPort, containerPort(t, c, intstr.FromString(*ep.Port)), "PodMonitor %s scrapes the admin port", pm.Name)
			assert.Equal(t, metricsPath, ep.Path, "PodMonitor %s scrapes --metrics-path", pm.Name)
		}
	}
	for _, sm := range objs.serviceMonitors {
		assert.Equal(t, d.Namespace, sm.Namespace, "ServiceMonitor %s beside the Deployment", sm.Name)
		sel, err := metav1Selector(&sm.Spec.Selector)
		require.NoError(t, err)
		var matched int
		for _, svc := range objs.services {
			if !sel.Matches(labels.Set(svc.Labels)) || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
				continue
			}
			matched++
			require.NotEmpty(t, sm.Spec.Endpoints)
			for _, ep := range sm.Spec.Endpoints {
				var target *intstr.IntOrString
				for _, sp := range svc.Spec.Ports {
					if sp.Name == ep.Port {
						target = &sp.TargetPort
					}
				}
				require.NotNil(t, target, "ServiceMonitor %s: Service %s has a port named %q", sm.Name, svc.Name, ep.Port)
				assert.Equal(t, adminPort, containerPort(t, c, *target), "ServiceMonitor %s scrapes the admin port", sm.Name)
				assert.Equal(t, metricsPath, ep.Path, "ServiceMonitor %s scrapes --metrics-path", sm.Name)
			}
		}
		assert.Equal(t, 1, matched, "ServiceMonitor %s selects one Service of the proxy pods", sm.Name)
	}
}

// namespaceNames returns the namespaces a selector admits when it selects
// by name only (matchLabels or an In expression on kubernetes.io/metadata.name
// and nothing broader), or nil.
func namespaceNames(t *testing.T, ls *metav1.LabelSelector) []string {
	t.Helper()
	var names []string
	if v, ok := ls.MatchLabels[namespaceNameLabel]; ok {
		names = append(names, v)
	}
	for _, e := range ls.MatchExpressions {
		if e.Key == namespaceNameLabel && e.Operator == metav1.LabelSelectorOpIn {
			if names != nil {
				return nil // both: an intersection, not worth a special case
			}
			names = slices.Clone(e.Values)
		}
	}
	return names
}

// policiesFor returns the NetworkPolicies that select the Deployment's pods
// for a direction.
func policiesFor(t *testing.T, d *appsv1.Deployment, objs *objects, typ networkingv1.PolicyType) []*networkingv1.NetworkPolicy {
	t.Helper()
	var out []*networkingv1.NetworkPolicy
	for _, np := range objs.networkPolicies {
		if np.Namespace != d.Namespace || !slices.Contains(np.Spec.PolicyTypes, typ) {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		require.NoError(t, err)
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, np)
		}
	}
	return out
}

// portsInclude reports whether a rule's ports cover a port of the selected
// container (an empty list or a nil port covers every port).
func portsInclude(t *testing.T, ports []networkingv1.NetworkPolicyPort, c corev1.Container, p int32, proto corev1.Protocol) bool {
	t.Helper()
	if len(ports) == 0 {
		return true
	}
	for _, np := range ports {
		rp := corev1.ProtocolTCP
		if np.Protocol != nil {
			rp = *np.Protocol
		}
		if rp != proto {
			continue
		}
		if np.Port == nil {
			return true
		}
		first := containerPort(t, c, *np.Port)
		last := first
		if np.EndPort != nil {
			last = *np.EndPort
		}
		if first <= p && p <= last {
			return true
		}
	}
	return false
}

// ingressAdmits reports whether a NetworkPolicy admits a pod (in namespace
// ns, with labels pod) to a port of the container, as the API documents
// peers: a podSelector alone means the policy's namespace, both selectors
// mean their intersection.
func ingressAdmits(t *testing.T, np *networkingv1.NetworkPolicy, c corev1.Container, ns string, pod labels.Set, p int32) bool {
	t.Helper()
	nsLabels := labels.Set{namespaceNameLabel: ns}
	for _, rule := range np.Spec.Ingress {
		if !portsInclude(t, rule.Ports, c, p, corev1.ProtocolTCP) {
			continue
		}
		if len(rule.From) == 0 {
			return true
		}
		for _, peer := range rule.From {
			if peer.IPBlock != nil {
				continue
			}
			nsOK := ns == np.Namespace
			if peer.NamespaceSelector != nil {
				sel, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
				require.NoError(t, err)
				nsOK = sel.Matches(nsLabels)
			}
			podOK := true
			if peer.PodSelector != nil {
				sel, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
				require.NoError(t, err)
				podOK = sel.Matches(pod)
			}
			if nsOK && podOK {
				return true
			}
		}
	}
	return false
}

// egressAllows reports whether NetworkPolicies let the pod connect to an
// address outside the cluster's pods (no pod or namespace selector matches
// it): only rules without peers or with an ipBlock holding it do.
func egressAllows(t *testing.T, pols []*networkingv1.NetworkPolicy, c corev1.Container, addr netip.Addr, p int32, proto corev1.Protocol) bool {
	t.Helper()
	for _, np := range pols {
		for _, rule := range np.Spec.Egress {
			for _, rp := range rule.Ports {
				require.True(t, rp.Port == nil || rp.Port.Type == intstr.Int, "NetworkPolicy %s: a named egress port means the destination pod's, which an address outside the cluster lacks", np.Name)
			}
			if !portsInclude(t, rule.Ports, c, p, proto) {
				continue
			}
			if len(rule.To) == 0 {
				return true
			}
			for _, peer := range rule.To {
				if peer.IPBlock == nil {
					continue
				}
				in := netip.MustParsePrefix(peer.IPBlock.CIDR).Contains(addr)
				for _, ex := range peer.IPBlock.Except {
					if netip.MustParsePrefix(ex).Contains(addr) {
						in = false
					}
				}
				if in {
					return true
				}
			}
		}
	}
	return false
}

// podIdentityAgents are the EKS Pod Identity agent's addresses (IPv4 and
// IPv6 clusters); it listens on port 80 on every node.
var podIdentityAgents = []netip.Addr{netip.MustParseAddr("169.254.170.23"), netip.MustParseAddr("fd00:ec2::23")}

// checkEgress checks that the pod reaches DNS, HTTPS and, if it needs AWS
// credentials (agent), the Pod Identity agent, and nothing else on
// link-local: in particular not the instance metadata service, which would
// hand out the node's role.
func checkEgress(t *testing.T, d *appsv1.Deployment, c corev1.Container, objs *objects, agent bool) {
	t.Helper()
	pols := policiesFor(t, d, objs, networkingv1.PolicyTypeEgress)
	require.NotEmpty(t, pols, "a NetworkPolicy limits %s's egress", d.Name)
	allows := func(addr string, p int32, proto corev1.Protocol) bool {
		return egressAllows(t, pols, c, netip.MustParseAddr(addr), p, proto)
	}
	// Names in this test are addresses it never connects to.
	for _, a := range []string{"10.96.0.10", "172.20.0.10", "fd00:ec2::253"} {
		assert.True(t, allows(a, 53, corev1.ProtocolUDP), "DNS to %s over UDP", a)
		assert.True(t, allows(a, 53, corev1.ProtocolTCP), "DNS to %s over TCP", a)
	}
	for _, a := range []string{"52.94.0.1", "3.3.3.3", "2600:1f18::1"} {
		assert.True(t, allows(a, 443, corev1.ProtocolTCP), "HTTPS to %s (STS, upstreams)", a)
		assert.False(t, allows(a, 80, corev1.ProtocolTCP), "plain HTTP to %s", a)
		assert.False(t, allows(a, 22, corev1.ProtocolTCP), "SSH to %s", a)
	}
	linkLocal := []string{"169.254.169.254", "169.254.170.2", "169.254.170.23", "169.254.0.1", "fd00:ec2::254", "fd00:ec2::23", "fe80::1"}
	for _, a := range linkLocal {
		addr := netip.MustParseAddr(a)
		for _, p := range []int32{80, 443, 8080, 9090, 2375} {
			want := agent && p == 80 && slices.Contains(podIdentityAgents, addr)
			assert.Equal(t, want, allows(a, p, corev1.ProtocolTCP), "egress to %s port %d", a, p)
		}
	}
}

// checkDeployments checks every stsproxy Deployment in a rendering: pod
// security, flags against the real binary, probes, credentials, grace
// period, and the sidecar's or shared proxy's contract. validate is the
// stsproxy command that validates a container's flags without running it.
func checkDeployments(t *testing.T, bin string, flagsOf func(c corev1.Container) (proxyFlags, []string), objs *objects, pinned bool) {
	t.Helper()
	require.NotEmpty(t, objs.deployments)
	for _, d := range objs.deployments {
		spec := d.Spec.Template.Spec
		checkPodSecurity(t, d.Name, spec)
		sel, err := metav1Selector(d.Spec.Selector)
		require.NoError(t, err)
		require.True(t, sel.Matches(labels.Set(d.Spec.Template.Labels)), "the Deployment selects its own pods")
		found := false
		for _, sa := range objs.serviceAccounts {
			found = found || sa.Name == spec.ServiceAccountName
		}
		assert.True(t, found, "%s runs as service account %q, defined alongside", d.Name, spec.ServiceAccountName)

		cs, sidecars := stsproxyContainers(spec)
		require.NotEmpty(t, cs, "%s has an stsproxy container", d.Name)
		for i, c := range cs {
			if pinned {
				_, tag, tagged := strings.Cut(c.Image, ":")
				assert.True(t, tagged && tag != "latest", "the image is pinned to a version, got %q", c.Image)
				assert.Equal(t, imageVersion, tag, "the image's tag is the version the binary reports")
			}
			if isTokenFileWriter(c) {
				checkTokenFileWriter(t, bin, d, c, sidecars[i], objs)
				continue
			}
			pf, validate := flagsOf(c)
			validateWithBinary(t, bin, validate, pf, c)
			flags := pf.effective(t, c)
			checkProbes(t, c, flags)
			checkGracePeriod(t, spec, flags)
			checkScrapeAnnotations(t, d, c, flags, sidecars[i])
			if isInbound(c) {
				// stsproxy inbound makes no AWS call: no credentials, no
				// Pod Identity agent.
				checkGoMemLimit(t, c)
				checkEgress(t, d, c, objs, false)
				if sidecars[i] {
					checkInboundSidecar(t, d, c, flags, objs)
				} else {
					checkInbound(t, d, c, flags, objs)
				}
				continue
			}
			checkAWSEnv(t, c)
			checkEgress(t, d, c, objs, true)
			if sidecars[i] {
				checkSidecar(t, d, c, flags, objs)
			} else {
				checkSharedProxy(t, d, c, flags, objs)
			}
		}
	}
}

// metav1Selector converts a label selector, which must select something.
func metav1Selector(ls *metav1.LabelSelector) (labels.Selector, error) {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err == nil && sel.Empty() {
		return nil, fmt.Errorf("empty selector selects every pod")
	}
	return sel, err
}
