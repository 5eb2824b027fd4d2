package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// repoRoot is the stsauth repository, the parent of this module.
const repoRoot = ".."

// imageVersion is the VERSION build argument the tests build with.
const imageVersion = "v0.0.0-imagetest"

// workDir holds what the tests build; TestMain creates and removes it.
var workDir string

func TestMain(m *testing.M) {
	if os.Getenv(verifyChainEnv) != "" {
		os.Exit(verifyChainMain())
	}
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
