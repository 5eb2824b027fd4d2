package deploy_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/strvals"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// chartDir is the Helm chart.
const chartDir = "helm/stsproxy"

// releaseNamespace is the namespace the test installs releases into.
const releaseNamespace = "stsproxy-system"

// loadChart loads the chart with Helm's own loader.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	require.NoError(t, err)
	return ch
}

// renderChart renders the chart as "helm template" would for an install
// into releaseNamespace on a Kubernetes 1.33 cluster, with Helm's strict
// engine (a missing value fails), and returns the rendered files by name.
func renderChart(t *testing.T, ch *chart.Chart, vals chartutil.Values) (map[string]string, error) {
	t.Helper()
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: "v1.33.0", Major: "1", Minor: "33"}
	require.True(t, chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, caps.KubeVersion.Version), "kubeVersion %s", ch.Metadata.KubeVersion)
	top, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{
		Name: "stsproxy", Namespace: releaseNamespace, Revision: 1, IsInstall: true,
	}, caps)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.Render(ch, top)
}

// decodeChart decodes every rendered object strictly, and checks NOTES.txt
// renders every value it names.
func decodeChart(t *testing.T, files map[string]string) *objects {
	t.Helper()
	objs := new(objects)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		text := files[name]
		if strings.HasSuffix(name, "NOTES.txt") {
			assert.NotContains(t, text, "<no value>", "NOTES.txt")
			continue
		}
		for _, doc := range releaseutil.SplitManifests(text) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			objs.add(t, name, []byte(doc))
		}
	}
	return objs
}

// stripComments removes YAML comment lines.
func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// table returns the values table at a dotted path, or nil if there is none
// (chartutil's Values.Table returns something else then).
func table(vals chartutil.Values, path string) chartutil.Values {
	t, err := vals.Table(path)
	if err != nil {
		return nil
	}
	return t
}

// ciValues returns the chart's ci/*-values.yaml cases, as chart-testing
// finds them.
func ciValues(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	return files
}

func TestHelmChart(t *testing.T) {
	bin := stsproxyBinary(t)
	flagsOf := containerFlagsOf(t, bin)
	ch := loadChart(t)
	for _, file := range ciValues(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			vals, err := chartutil.ReadValuesFile(file)
			require.NoError(t, err)
			files, err := renderChart(t, ch, vals)
			require.NoError(t, err)
			objs := decodeChart(t, files)
			checkDeployments(t, bin, flagsOf, objs, true)
			for obj, ns := range objs.namespaceOf {
				assert.Equal(t, releaseNamespace, ns, "%s is in the release's namespace", obj)
			}
			var inbound bool
			for _, d := range objs.deployments {
				cs, _ := stsproxyContainers(d.Spec.Template.Spec)
				inbound = inbound || slices.ContainsFunc(cs, func(c corev1.Container) bool { return c.Name == "stsproxy-inbound" })
			}
			assert.Equal(t, vals["inbound"] != nil, inbound, "the inbound verifier is rendered exactly when enabled")
			sm := table(vals, "metrics.serviceMonitor")
			assert.Equal(t, sm["enabled"] == true, len(objs.serviceMonitors) == 1, "a ServiceMonitor exactly when enabled")
			m := table(vals, "metrics")
			pa := table(vals, "podAnnotations")
			for _, d := range objs.deployments {
				ann := d.Spec.Template.Annotations
				assert.Equal(t, m["scrapeAnnotations"] != false, ann["prometheus.io/scrape"] == "true", "%s: scrape annotations exactly when metrics.scrapeAnnotations", d.Name)
				for k, v := range pa {
					assert.Equal(t, v, ann[k], "%s: podAnnotations", d.Name)
				}
			}
			as := table(vals, "autoscaling")
			assert.Equal(t, as["enabled"] == true, len(objs.hpas) == 1, "a HorizontalPodAutoscaler exactly when enabled")
		})
	}
}

// TestHelmChartServiceAccount checks the IRSA annotation reaches the
// service account, and that without it the chart says how to associate the
// role with EKS Pod Identity.
func TestHelmChartServiceAccount(t *testing.T) {
	ch := loadChart(t)
	for _, tc := range []struct {
		file  string
		irsa  bool
		notes string
	}{
		{"irsa-values.yaml", true, ""},
		{"minimal-values.yaml", false, "aws eks create-pod-identity-association"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			vals, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "ci", tc.file))
			require.NoError(t, err)
			files, err := renderChart(t, ch, vals)
			require.NoError(t, err)
			objs := decodeChart(t, files)
			require.Len(t, objs.serviceAccounts, 1)
			sa := objs.serviceAccounts[0]
			role, ok := sa.Annotations["eks.amazonaws.com/role-arn"]
			assert.Equal(t, tc.irsa, ok, "IRSA annotation")
			if tc.irsa {
				assert.True(t, strings.HasPrefix(role, "arn:aws:iam::"), role)
			}
			notes := files["stsproxy/templates/NOTES.txt"]
			if tc.notes != "" {
				assert.Contains(t, notes, tc.notes)
				assert.Contains(t, notes, "--service-account "+sa.Name)
			} else {
				assert.NotContains(t, notes, "create-pod-identity-association")
			}
		})
	}
}

// TestHelmChartRequiredValues checks that what the chart cannot default
// fails the install with a message naming the value.
func TestHelmChartRequiredValues(t *testing.T) {
	ch := loadChart(t)
	base := func() chartutil.Values {
		vals, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "ci", "minimal-values.yaml"))
		require.NoError(t, err)
		return vals
	}
	for _, tc := range []struct {
		name   string
		edit   func(v chartutil.Values)
		errors string
	}{
		{"no region", func(v chartutil.Values) { delete(v, "aws") }, "aws.region is required"},
		{"no allowed hosts", func(v chartutil.Values) { delete(v, "config") }, "config.allowedHosts is required"},
		{"no client namespaces", func(v chartutil.Values) { delete(v, "networkPolicy") }, "networkPolicy.clientNamespaces is required"},
		{"inbound without upstream", func(v chartutil.Values) {
			v["inbound"] = map[string]any{"enabled": true, "issuers": []any{"https://x"}, "audiences": []any{"a"}}
		}, "inbound.upstream is required"},
		{"inbound without issuers", func(v chartutil.Values) {
			v["inbound"] = map[string]any{"enabled": true, "upstream": "http://127.0.0.1:8080", "audiences": []any{"a"}}
		}, "inbound.issuers is required"},
		{"inbound without audiences", func(v chartutil.Values) {
			v["inbound"] = map[string]any{"enabled": true, "upstream": "http://127.0.0.1:8080", "issuers": []any{"https://x"}}
		}, "inbound.audiences is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := base()
			_, err := renderChart(t, ch, vals)
			require.NoError(t, err, "the base values render")
			tc.edit(vals)
			_, err = renderChart(t, ch, vals)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.errors)
		})
	}
	_, err := renderChart(t, ch, chartutil.Values{})
	require.Error(t, err, "the chart's defaults alone")
}

// TestHelmChartSchema checks that values.schema.json refuses a misspelt key
// or a value of the wrong shape, which Helm would otherwise ignore or
// render into a broken manifest.
func TestHelmChartSchema(t *testing.T) {
	ch := loadChart(t)
	for _, tc := range []struct {
		name string
		set  string
	}{
		{"misspelt top-level key", "extraArg={--token-duration=15m}"},
		{"misspelt nested key", "networkPolicy.clientNamespace={payments}"},
		{"not a duration", "config.shutdownDelay=5"},
		{"not a port", "containerPorts.admin=70000"},
		{"unknown log level", "config.logLevel=verbose"},
		{"metrics path without slash", "metrics.path=metrics"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "ci", "minimal-values.yaml"))
			require.NoError(t, err)
			require.NoError(t, strvals.ParseInto(tc.set, vals))
			_, err = renderChart(t, ch, vals)
			require.Error(t, err, "--set %s", tc.set)
			assert.Contains(t, err.Error(), "schema")
		})
	}
}

// TestHelmChartNoEgressPortsIsRefused checks that an empty
// networkPolicy.egress.httpsPorts fails the install: it would render an
// egress rule without ports, which NetworkPolicy reads as every port, to
// every address but link-local.
func TestHelmChartNoEgressPortsIsRefused(t *testing.T) {
	ch := loadChart(t)
	vals, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "ci", "minimal-values.yaml"))
	require.NoError(t, err)
	vals["networkPolicy"].(map[string]any)["egress"] = map[string]any{"enabled": true, "httpsPorts": []any{}}
	_, err = renderChart(t, ch, vals)
	require.Error(t, err, "httpsPorts: []")
	assert.Contains(t, err.Error(), "httpsPorts")
}

// TestHelmChartVersion checks that the chart's appVersion, which the image
// tag defaults to, is the version in the kustomize image component, and
// that the chart supports native-sidecar-era clusters only.
func TestHelmChartVersion(t *testing.T) {
	ch := loadChart(t)
	assert.Equal(t, imageVersion, ch.Metadata.AppVersion, "Chart.yaml appVersion is %s's tag", imageComponent)
	require.NoError(t, ch.Validate())
	var vals struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"image"`
	}
	data, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(data, &vals))
	assert.Empty(t, vals.Image.Tag, "image.tag defaults to the chart's appVersion")
	kc := readKustomization(t, filepath.Join(imageComponent, "kustomization.yaml"))
	assert.Equal(t, kc.Images[0].NewName, vals.Image.Repository, "one image repository in both")
	assert.False(t, chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, "v1.28.0"))
}

// TestHelmInstallREADME renders the chart with the README's "helm install"
// command, its words split as a POSIX shell would and its --set values
// parsed with Helm's own parser, and checks the result like the ci cases.
func TestHelmInstallREADME(t *testing.T) {
	bin := stsproxyBinary(t)
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	require.NoError(t, err)
	_, after, ok := strings.Cut(string(readme), "\nhelm install ")
	require.True(t, ok, "the README has a helm install command")
	cmd, _, _ := strings.Cut("helm install "+after, "\n```")
	words, err := shellWords(cmd)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(words), 4)
	assert.Equal(t, []string{"helm", "install", "stsproxy", "deploy/helm/stsproxy"}, words[:4])
	vals := map[string]any{}
	namespace := ""
	for i := 4; i < len(words); i++ {
		switch words[i] {
		case "--set":
			i++
			require.Less(t, i, len(words))
			require.NoError(t, strvals.ParseInto(words[i], vals), "--set %s", words[i])
		case "--namespace":
			i++
			require.Less(t, i, len(words))
			namespace = words[i]
		case "--create-namespace":
		default:
			t.Fatalf("the test does not know helm install's %q", words[i])
		}
	}
	require.NotEmpty(t, namespace, "the README installs into its own namespace")
	files, err := renderChart(t, loadChart(t), vals)
	require.NoError(t, err)
	objs := decodeChart(t, files)
	checkDeployments(t, bin, containerFlagsOf(t, bin), objs, true)
	require.Len(t, objs.serviceAccounts, 1)
	assert.Contains(t, objs.serviceAccounts[0].Annotations, "eks.amazonaws.com/role-arn", "the README's IRSA annotation reaches the service account")
}

// shellWords splits a command as a POSIX shell would, for the quoting the
// README uses: backslash-newline continues the line, a backslash outside
// quotes escapes the next character, single quotes are literal, and double
// quotes keep \" and \\ escapes. Anything else a shell would expand fails.
func shellWords(s string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // a word has started
	)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			i++
			if s[i] != '\n' {
				cur.WriteByte(s[i])
				in = true
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			in = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0 {
					i++
				} else if strings.IndexByte("$`", s[i]) >= 0 {
					return nil, fmt.Errorf("expansion in double quotes: %q", s[i:])
				}
				cur.WriteByte(s[i])
			}
			if i == len(s) {
				return nil, fmt.Errorf("unterminated double quote")
			}
			in = true
		case c == ' ' || c == '\t' || c == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		case strings.IndexByte("$`*?[]|&;<>()~#", c) >= 0:
			return nil, fmt.Errorf("shell syntax the test does not interpret: %q", s[i:])
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}
