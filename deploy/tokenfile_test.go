package deploy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// isTokenFileWriter reports whether an stsproxy container runs "stsproxy
// token", which keeps a token file fresh, rather than a proxy.
func isTokenFileWriter(c corev1.Container) bool {
	return len(c.Args) > 0 && c.Args[0] == "token"
}

// checkTokenFileWriter checks the token file sidecar's contract: a native
// sidecar that runs "stsproxy token --refresh" with flags the binary
// accepts, writing into a memory-backed emptyDir that every other container
// mounts read-only, with probes on its admin listener gating the
// application's start on the first token.
func checkTokenFileWriter(t *testing.T, bin string, d *appsv1.Deployment, c corev1.Container, sidecar bool, objs *objects) {
	t.Helper()
	spec := d.Spec.Template.Spec
	require.True(t, sidecar, "%s: the token file writer is a native sidecar", d.Name)
	require.NotNil(t, c.RestartPolicy, "a native sidecar has restartPolicy")
	assert.Equal(t, corev1.ContainerRestartPolicyAlways, *c.RestartPolicy)

	pf := stsproxyFlags(t, bin, "token")
	flags := pf.effective(t, c)
	assert.Equal(t, "true", flags["refresh"], "the file is kept fresh")
	assert.NotEmpty(t, flags["token-audience"], "static audience")
	require.NotEmpty(t, flags["metrics-listen-addr"], "an admin listener for the probes")
	assert.NotNil(t, c.StartupProbe, "a startup probe holds the application until the first token is written")
	checkProbes(t, c, flags)
	checkAWSEnv(t, c)
	checkEgress(t, d, c, objs, true)
	validateTokenFileWriter(t, bin, pf, c)

	// The file's directory is a memory-backed emptyDir: the writer's only
	// writable mount there; every other container mounts it read-only.
	file := flags["output-file"]
	require.True(t, path.IsAbs(file), "--output-file %q is an absolute path", file)
	dir := path.Dir(file)
	var volume string
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			volume = m.Name
			assert.False(t, m.ReadOnly, "the writer's mount of %s is writable", dir)
		}
	}
	require.NotEmpty(t, volume, "the writer mounts a volume at %s, the file's directory (the rename stays on one filesystem)", dir)
	i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == volume })
	require.GreaterOrEqual(t, i, 0, "volume %s is defined", volume)
	ed := spec.Volumes[i].EmptyDir
	require.NotNil(t, ed, "volume %s is an emptyDir", volume)
	assert.Equal(t, corev1.StorageMediumMemory, ed.Medium, "the token never reaches the node's disk")
	readers := 0
	for _, o := range slices.Concat(spec.InitContainers, spec.Containers) {
		if o.Name == c.Name {
			continue
		}
		for _, m := range o.VolumeMounts {
			if m.Name == volume {
				readers++
				assert.True(t, m.ReadOnly, "container %s mounts the token volume read-only", o.Name)
			}
		}
	}
	assert.Positive(t, readers, "an application mounts the token volume")

	// The file is mode 0600: the readers must run as the writer's user.
	uid := func(o corev1.Container) *int64 {
		if o.SecurityContext != nil && o.SecurityContext.RunAsUser != nil {
			return o.SecurityContext.RunAsUser
		}
		if spec.SecurityContext != nil {
			return spec.SecurityContext.RunAsUser
		}
		return nil
	}
	writer := uid(c)
	require.NotNil(t, writer, "the writer's user is set")
	for _, o := range spec.Containers {
		if got := uid(o); assert.NotNil(t, got, "container %s's user is set", o.Name) {
			assert.Equal(t, *writer, *got, "container %s runs as the writer's user, to read the 0600 file", o.Name)
		}
	}
}

// validateTokenFileWriter runs the container's "stsproxy token" once, with
// its flags and environment, against the binary's in-process STS emulator
// and a file of the test's, so a value stsproxy would reject at startup
// fails the test.
func validateTokenFileWriter(t *testing.T, bin string, pf proxyFlags, c corev1.Container) {
	t.Helper()
	args, ok := cutPrefix(c.Args, pf.command)
	require.True(t, ok)
	out := filepath.Join(t.TempDir(), "token")
	cmd := exec.Command(bin, slices.Concat(pf.command, args,
		[]string{"--local-sts", "--refresh=false", "--output-file", out})...)
	cmd.Env = []string{"HOME=" + t.TempDir()}
	for _, e := range c.Env {
		cmd.Env = append(cmd.Env, e.Name+"="+envValue(t, c, e))
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Run(), "stsproxy rejects container %s's configuration: %s", c.Name, stderr.String())
	fi, err := os.Stat(out)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}
