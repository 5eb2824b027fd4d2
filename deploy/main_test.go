package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// repoRoot is the stsauth repository, the parent of this module.
const repoRoot = ".."

// imageVersion is the VERSION build argument the tests build with: the
// image tag of the kustomize image component (and the Helm chart's
// appVersion), so the tests prove that the binary in the image the manifests
// name reports that version. TestMain reads it.
var imageVersion string

// workDir holds what the tests build; TestMain creates and removes it.
var workDir string

func TestMain(m *testing.M) {
	if os.Getenv(verifyChainEnv) != "" {
		os.Exit(verifyChainMain())
	}
	v, err := readImageVersion()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	imageVersion = v
	dir, err := os.MkdirTemp("", "stsauth-deploy-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdir temp:", err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// goBuild builds the stsproxy binary for linux/GOARCH exactly as the
// Dockerfile's build stage does (flags taken from it), from the repository's
// own module, so the binary is the one "docker build" would produce.
var goBuild = sync.OnceValues(func() (string, error) {
	stages, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		return "", err
	}
	b, err := buildCommand(stages)
	if err != nil {
		return "", err
	}
	out := filepath.Join(workDir, "stsproxy")
	args := []string{"build", "-trimpath", "-ldflags=" + expand(b.ldflags, map[string]string{"VERSION": imageVersion}), "-o", out, b.pkg}
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %v: %v\n%s", args, err, msg)
	}
	return out, nil
})

// stsproxyBinary returns the binary built by goBuild, skipping on systems
// other than Linux, where a linux binary cannot run.
func stsproxyBinary(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the image's linux binary runs only on linux")
	}
	bin, err := goBuild()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// readImageVersion returns the tag of the image component's one images:
// entry.
func readImageVersion() (string, error) {
	p := filepath.Join(imageComponent, "kustomization.yaml")
	data, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		return "", fmt.Errorf("%s: %v", p, err)
	}
	if len(k.Images) != 1 || k.Images[0].NewTag == "" {
		return "", fmt.Errorf("%s: want one images: entry with a newTag", p)
	}
	return k.Images[0].NewTag, nil
}
