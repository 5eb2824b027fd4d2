package deploy_test

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kubernetesDir holds the kustomizations.
const kubernetesDir = "kubernetes"

// imageComponent is the kustomize component holding the one images: entry
// every example uses.
const imageComponent = "kubernetes/components/image"

// renderFS builds the kustomization in dir of fsys with kustomize's own
// library and decodes every object strictly into its Kubernetes API type.
func renderFS(t *testing.T, fsys filesys.FileSystem, dir string) *objects {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fsys, dir)
	require.NoError(t, err, "kustomize build %s", dir)
	objs := new(objects)
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		require.NoError(t, err)
		objs.add(t, dir, y)
	}
	return objs
}

// render builds the kustomization in dir on disk.
func render(t *testing.T, dir string) *objects {
	t.Helper()
	return renderFS(t, filesys.MakeFsOnDisk(), dir)
}

// kustomizations returns every directory under kubernetes/ with a
// kustomization.yaml of kind Kustomization (components are rendered through
// the kustomizations that use them).
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(kubernetesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "kustomization.yaml" {
			return err
		}
		if readKustomization(t, p).Kind != types.ComponentKind {
			dirs = append(dirs, filepath.Dir(p))
		}
		return nil
	})
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	return dirs
}

// readKustomization decodes a kustomization.yaml strictly.
func readKustomization(t *testing.T, p string) types.Kustomization {
	t.Helper()
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	var k types.Kustomization
	require.NoError(t, yaml.UnmarshalStrict(data, &k), "%s", p)
	return k
}

// containerFlagsOf is flagsOf for kustomizations: a container whose
// arguments start with "inbound" runs stsproxy inbound, validated by
// "stsproxy inbound --validate"; every other runs the proxy, validated by
// "stsproxy policy", which takes every proxy flag. Both read their flags
// from the real binary's usage.
func containerFlagsOf(t *testing.T, bin string) func(corev1.Container) (proxyFlags, []string) {
	t.Helper()
	proxy, inbound := stsproxyFlags(t, bin), stsproxyFlags(t, bin, "inbound")
	return func(c corev1.Container) (proxyFlags, []string) {
		if len(c.Args) > 0 && c.Args[0] == "inbound" {
			return inbound, []string{"inbound", "--validate"}
		}
		return proxy, []string{"policy"}
	}
}

func TestKustomizations(t *testing.T) {
	bin := stsproxyBinary(t)
	flagsOf := containerFlagsOf(t, bin)
	for _, dir := range kustomizations(t) {
		t.Run(filepath.ToSlash(dir), func(t *testing.T) {
			objs := render(t, dir)
			example := strings.Contains(filepath.ToSlash(dir), "/examples/")
			checkDeployments(t, bin, flagsOf, objs, example)
			checkNamespacesExist(t, objs)
		})
	}
}

// checkNamespacesExist checks that "kubectl apply -k" succeeds on an empty
// cluster: every namespaced object is in default or in a namespace the same
// kustomization creates.
func checkNamespacesExist(t *testing.T, objs *objects) {
	t.Helper()
	created := map[string]bool{"": true, "default": true}
	for _, ns := range objs.namespaces {
		created[ns.Name] = true
	}
	for obj, ns := range objs.namespaceOf {
		assert.True(t, created[ns], "%s is in namespace %q, which nothing creates", obj, ns)
	}
}

// TestKustomizeComponents renders each example with each optional
// component it does not include yet (the PodMonitor needs the Prometheus
// Operator's CRDs, so no example applies it by default) and checks the
// result like the examples.
func TestKustomizeComponents(t *testing.T) {
	bin := stsproxyBinary(t)
	flagsOf := containerFlagsOf(t, bin)
	examples, err := filepath.Glob(filepath.Join(kubernetesDir, "examples", "*", "kustomization.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, examples)
	for _, kfile := range examples {
		k := readKustomization(t, kfile)
		base := filepath.Base(filepath.Dir(kfile))
		if !slices.Contains(k.Resources, "../../shared-proxy") {
			continue // both optional components are the shared proxy's
		}
		for _, comp := range []string{"podmonitor", "autoscaling"} {
			ref := path.Join("../../components", comp)
			if slices.Contains(k.Components, ref) {
				continue
			}
			t.Run(base+"+"+comp, func(t *testing.T) {
				fsys := copyToMemory(t, kubernetesDir)
				k := k
				k.Components = append(slices.Clone(k.Components), ref)
				data, err := yaml.Marshal(k)
				require.NoError(t, err)
				dir := path.Join("/", kubernetesDir, "examples", base)
				require.NoError(t, fsys.WriteFile(path.Join(dir, "kustomization.yaml"), data))
				objs := renderFS(t, fsys, dir)
				if comp == "podmonitor" {
					require.NotEmpty(t, objs.podMonitors)
				}
				checkDeployments(t, bin, flagsOf, objs, true)
			})
		}
	}
}

// copyToMemory copies a directory tree into an in-memory file system, at
// the same path under /.
func copyToMemory(t *testing.T, root string) filesys.FileSystem {
	t.Helper()
	fsys := filesys.MakeFsInMemory()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return fsys.WriteFile("/"+filepath.ToSlash(p), data)
	})
	require.NoError(t, err)
	return fsys
}

func TestKustomizationsCoverBothModes(t *testing.T) {
	var sidecars, shared, inbound int
	for _, dir := range kustomizations(t) {
		for _, d := range render(t, dir).deployments {
			cs, isSidecar := stsproxyContainers(d.Spec.Template.Spec)
			for i, s := range isSidecar {
				switch {
				case isInbound(cs[i]):
					inbound++
				case s:
					sidecars++
				default:
					shared++
				}
			}
		}
	}
	assert.GreaterOrEqual(t, sidecars, 2, "sidecar base and example")
	assert.GreaterOrEqual(t, shared, 2, "shared proxy base and example")
	assert.GreaterOrEqual(t, inbound, 2, "stsproxy inbound sidecar base and example")
}

// TestExamplesUseTheImageComponent checks that the image is named in one
// place: every example takes it from the image component, and no
// kustomization has an images: entry of its own.
func TestExamplesUseTheImageComponent(t *testing.T) {
	for _, dir := range kustomizations(t) {
		k := readKustomization(t, filepath.Join(dir, "kustomization.yaml"))
		assert.Empty(t, k.Images, "%s: the image is set in %s only", dir, imageComponent)
		if strings.Contains(filepath.ToSlash(dir), "/examples/") {
			assert.Contains(t, k.Components, "../../components/image", "%s takes the image from %s", dir, imageComponent)
		}
	}
	k := readKustomization(t, filepath.Join(imageComponent, "kustomization.yaml"))
	require.Len(t, k.Images, 1)
	assert.Equal(t, "stsproxy", k.Images[0].Name, "the bases' image name")
	assert.Equal(t, imageVersion, k.Images[0].NewTag)
}
