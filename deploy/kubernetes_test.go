package deploy_test

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"io/fs"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kubernetesDir holds the kustomizations.
const kubernetesDir = "kubernetes"

// clientLabel is the label a pod needs to reach the shared proxy.
const clientLabel = "stsproxy.stsauth.io/client"

// objects are the decoded objects of one rendered kustomization.
type objects struct {
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	pdbs            []*policyv1.PodDisruptionBudget
	networkPolicies []*networkingv1.NetworkPolicy
	serviceAccounts []*corev1.ServiceAccount
}

// render builds the kustomization in dir with kustomize's own library and
// decodes every object strictly (unknown or duplicate fields fail) into its
// Kubernetes API type. A kind this test does not know fails too.
func render(t *testing.T, dir string) objects {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	require.NoError(t, err, "kustomize build %s", dir)
	var objs objects
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		require.NoError(t, err)
		strict := func(v any) {
			require.NoError(t, yaml.UnmarshalStrict(y, v), "%s %s in %s:\n%s", r.GetKind(), r.GetName(), dir, y)
		}
		switch gvk := r.GetGvk(); gvk.ApiVersion() + " " + gvk.Kind {
		case "apps/v1 Deployment":
			var o appsv1.Deployment
			strict(&o)
			objs.deployments = append(objs.deployments, &o)
		case "v1 Service":
			var o corev1.Service
			strict(&o)
			objs.services = append(objs.services, &o)
		case "policy/v1 PodDisruptionBudget":
			var o policyv1.PodDisruptionBudget
			strict(&o)
			objs.pdbs = append(objs.pdbs, &o)
		case "networking.k8s.io/v1 NetworkPolicy":
			var o networkingv1.NetworkPolicy
			strict(&o)
			objs.networkPolicies = append(objs.networkPolicies, &o)
		case "v1 ServiceAccount":
			var o corev1.ServiceAccount
			strict(&o)
			objs.serviceAccounts = append(objs.serviceAccounts, &o)
		default:
			t.Errorf("%s: unexpected %s %s/%s", dir, gvk.ApiVersion(), gvk.Kind, r.GetName())
		}
	}
	return objs
}

// kustomizations returns every directory under kubernetes/ with a
// kustomization.yaml.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(kubernetesDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(p))
		}
		return err
	})
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	return dirs
}

// proxyFlags is what the tests need from stsproxy's flag definitions.
type proxyFlags struct {
	bools map[string]bool // flag name → is a boolean switch
	env   map[string]string
}

// usageFlagRE matches a flag line of "stsproxy --help":
// "  --token-audience value (env TOKEN_AUDIENCE)".
var usageFlagRE = regexp.MustCompile(`(?m)^  --([a-z0-9-]+)( value)?(?: \(env ([A-Z0-9_]+)\))?$`)

// stsproxyFlags reads the flag definitions from the real binary's usage,
// so a container's arguments are checked against the flags it really has.
func stsproxyFlags(t *testing.T, bin string) proxyFlags {
	t.Helper()
	out, err := exec.Command(bin, "--help").Output()
	require.NoError(t, err)
	pf := proxyFlags{bools: map[string]bool{}, env: map[string]string{}}
	for _, m := range usageFlagRE.FindAllStringSubmatch(string(out), -1) {
		pf.bools[m[1]] = m[2] == ""
		pf.env[m[1]] = m[3]
	}
	require.Contains(t, pf.bools, "metrics-listen-addr", "stsproxy --help:\n%s", out)
	return pf
}

// effective returns the container's value of each flag: its argument, else
// its environment variable, else "" (the default).
func (pf proxyFlags) effective(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	fset := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	vals := map[string]*string{}
	for name, isBool := range pf.bools {
		if isBool {
			fset.Bool(name, false, "")
			continue
		}
		vals[name] = fset.String(name, "", "")
	}
	require.NoError(t, fset.Parse(c.Args), "container %s args %q against stsproxy's flags", c.Name, c.Args)
	require.Empty(t, fset.Args(), "container %s: arguments that are not flags", c.Name)
	set := map[string]bool{}
	fset.Visit(func(f *flag.Flag) { set[f.Name] = true })
	got := map[string]string{}
	for name, v := range vals {
		got[name] = *v
		if !set[name] {
			for _, e := range c.Env {
				if e.Name == pf.env[name] {
					got[name] = e.Value
				}
			}
		}
	}
	return got
}

// validateWithBinary runs "stsproxy policy" (which takes every proxy flag
// and validates them like the proxy) with the container's args and env, so
// a value the proxy would reject at startup fails the test.
func validateWithBinary(t *testing.T, bin string, c corev1.Container) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"policy"}, c.Args...)...)
	cmd.Env = []string{"HOME=" + t.TempDir()}
	for _, e := range c.Env {
		require.Nil(t, e.ValueFrom, "env %s: only literal values can be checked", e.Name)
		cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
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

// stsproxyContainer is the stsproxy container of a pod template, and
// whether it is a native sidecar (an init container).
func stsproxyContainer(t *testing.T, spec corev1.PodSpec) (c corev1.Container, sidecar, ok bool) {
	t.Helper()
	for _, c := range spec.InitContainers {
		if c.Name == "stsproxy" {
			return c, true, true
		}
	}
	for _, c := range spec.Containers {
		if c.Name == "stsproxy" {
			return c, false, true
		}
	}
	return corev1.Container{}, false, false
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

func TestKustomizations(t *testing.T) {
	bin := stsproxyBinary(t)
	pf := stsproxyFlags(t, bin)
	for _, dir := range kustomizations(t) {
		t.Run(filepath.ToSlash(dir), func(t *testing.T) {
			objs := render(t, dir)
			require.NotEmpty(t, objs.deployments)
			for _, d := range objs.deployments {
				spec := d.Spec.Template.Spec
				checkPodSecurity(t, d.Name, spec)
				sel, err := metav1Selector(d.Spec.Selector)
				require.NoError(t, err)
				require.True(t, sel.Matches(labels.Set(d.Spec.Template.Labels)), "the Deployment selects its own pods")

				c, sidecar, ok := stsproxyContainer(t, spec)
				require.True(t, ok, "%s has an stsproxy container", d.Name)
				if strings.Contains(filepath.ToSlash(dir), "/examples/") {
					_, tag, tagged := strings.Cut(c.Image, ":")
					assert.True(t, tagged && tag != "latest", "an example pins the image to a version, got %q", c.Image)
				}
				validateWithBinary(t, bin, c)
				flags := pf.effective(t, c)
				checkProbes(t, c, flags)
				found := false
				for _, sa := range objs.serviceAccounts {
					found = found || sa.Name == spec.ServiceAccountName
				}
				assert.True(t, found, "%s runs as service account %q, defined alongside", d.Name, spec.ServiceAccountName)
				if sidecar {
					checkSidecar(t, c, flags)
				} else {
					checkSharedProxy(t, d, c, flags, objs)
				}
			}
		})
	}
}

// checkSidecar checks the native sidecar's contract: it restarts for the
// pod's life, listens on loopback only, pins the upstream and the audience,
// and gates the application's start on its first token.
func checkSidecar(t *testing.T, c corev1.Container, flags map[string]string) {
	t.Helper()
	require.NotNil(t, c.RestartPolicy, "a native sidecar has restartPolicy")
	assert.Equal(t, corev1.ContainerRestartPolicyAlways, *c.RestartPolicy)
	assert.Equal(t, "127.0.0.1:8080", flags["listen-addr"], "the sidecar is reachable from its pod only")
	assert.NotEmpty(t, flags["upstream-host"], "pinned upstream")
	assert.NotEmpty(t, flags["token-audience"], "static audience")
	assert.NotNil(t, c.StartupProbe, "a startup probe holds the application until the first token is cached")
	for _, p := range c.Ports {
		assert.NotEqual(t, port(t, flags["listen-addr"], ""), p.ContainerPort, "the loopback proxy port is not declared")
	}
}

// checkSharedProxy checks the shared proxy's Deployment against its Service,
// PodDisruptionBudget and NetworkPolicy.
func checkSharedProxy(t *testing.T, d *appsv1.Deployment, c corev1.Container, flags map[string]string, objs objects) {
	t.Helper()
	podLabels := labels.Set(d.Spec.Template.Labels)
	proxyPort := port(t, flags["listen-addr"], ":8080")
	require.NotNil(t, d.Spec.Replicas)
	assert.GreaterOrEqual(t, *d.Spec.Replicas, int32(2), "replicas")
	assert.Empty(t, flags["upstream-host"], "the shared proxy routes by header")
	assert.NotEmpty(t, flags["allowed-hosts"], "header routing needs --allowed-hosts")
	shutdown := 15 * time.Second
	if v := flags["shutdown-timeout"]; v != "" {
		var err error
		shutdown, err = time.ParseDuration(v)
		require.NoError(t, err)
	}
	require.NotNil(t, d.Spec.Template.Spec.TerminationGracePeriodSeconds)
	assert.Greater(t, time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds)*time.Second, shutdown,
		"terminationGracePeriodSeconds leaves --shutdown-timeout to finish")

	require.Len(t, objs.services, 1)
	svc := objs.services[0]
	assert.True(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels), "the Service selects the proxy pods")
	require.NotEmpty(t, svc.Spec.Ports)
	for _, sp := range svc.Spec.Ports {
		assert.Equal(t, proxyPort, containerPort(t, c, sp.TargetPort), "the Service targets --listen-addr's port")
	}

	require.Len(t, objs.pdbs, 1)
	sel, err := metav1Selector(objs.pdbs[0].Spec.Selector)
	require.NoError(t, err)
	assert.True(t, sel.Matches(podLabels), "the PodDisruptionBudget covers the proxy pods")
	if mu := objs.pdbs[0].Spec.MinAvailable; assert.NotNil(t, mu) {
		assert.Less(t, mu.IntValue(), int(*d.Spec.Replicas), "minAvailable below replicas, so a node can drain")
	}

	require.Len(t, objs.networkPolicies, 1)
	np := objs.networkPolicies[0]
	sel, err = metav1Selector(&np.Spec.PodSelector)
	require.NoError(t, err)
	assert.True(t, sel.Matches(podLabels), "the NetworkPolicy applies to the proxy pods")
	assert.Contains(t, np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
	require.NotEmpty(t, np.Spec.Ingress)
	for _, rule := range np.Spec.Ingress {
		require.NotEmpty(t, rule.From, "an ingress rule without from admits everyone")
		for _, peer := range rule.From {
			assert.Nil(t, peer.IPBlock, "clients are admitted by label, not address")
			require.NotNil(t, peer.PodSelector, "every peer selects pods by label")
			assert.Equal(t, "true", peer.PodSelector.MatchLabels[clientLabel], "peers need the %s label", clientLabel)
		}
		require.NotEmpty(t, rule.Ports, "the rule names the proxy port")
		for _, p := range rule.Ports {
			require.NotNil(t, p.Port)
			assert.Equal(t, proxyPort, containerPort(t, c, *p.Port), "only the proxy port is opened to clients")
		}
	}
}

func TestKustomizationsCoverBothModes(t *testing.T) {
	var sidecars, shared int
	for _, dir := range kustomizations(t) {
		for _, d := range render(t, dir).deployments {
			if _, sidecar, ok := stsproxyContainer(t, d.Spec.Template.Spec); ok && sidecar {
				sidecars++
			} else if ok {
				shared++
			}
		}
	}
	assert.GreaterOrEqual(t, sidecars, 2, "sidecar base and example")
	assert.GreaterOrEqual(t, shared, 2, "shared proxy base and example")
}

// metav1Selector converts a label selector, which must select something.
func metav1Selector(ls *metav1.LabelSelector) (labels.Selector, error) {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err == nil && sel.Empty() {
		return nil, errors.New("empty selector selects every pod")
	}
	return sel, err
}
