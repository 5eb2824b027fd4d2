package deploy_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// caBundle is where the image keeps its CA roots: the first file Go's
// crypto/x509 reads on Linux, and where Debian's ca-certificates writes the
// bundle in the build stage (and on the machine running this test).
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// goBuildCmd is the go build invocation of the Dockerfile's build stage.
type goBuildCmd struct {
	ldflags string // with ${VERSION} unexpanded
	out     string // the -o path in the build stage
	pkg     string
}

var (
	ldflagsRE = regexp.MustCompile(`-ldflags="([^"]*)"`)
	outRE     = regexp.MustCompile(`-o (\S+)`)
)

// buildCommand finds the build stage's go build and checks the settings
// that make the binary static, reproducible and cross-compiled.
func buildCommand(stages []stage) (goBuildCmd, error) {
	for _, st := range stages {
		for _, run := range st.all("RUN") {
			if !strings.Contains(run, "go build") {
				continue
			}
			for _, want := range []string{"CGO_ENABLED=0", "GOOS=${TARGETOS}", "GOARCH=${TARGETARCH}", "-trimpath", "-X main.version=${VERSION}"} {
				if !strings.Contains(run, want) {
					return goBuildCmd{}, fmt.Errorf("Dockerfile go build lacks %s: %s", want, run)
				}
			}
			ld, out := ldflagsRE.FindStringSubmatch(run), outRE.FindStringSubmatch(run)
			if ld == nil || out == nil {
				return goBuildCmd{}, fmt.Errorf("Dockerfile go build lacks -ldflags=\"...\" or -o: %s", run)
			}
			fields := strings.Fields(run)
			return goBuildCmd{ldflags: ld[1], out: out[1], pkg: fields[len(fields)-1]}, nil
		}
	}
	return goBuildCmd{}, errors.New("Dockerfile has no RUN with go build")
}

// buildImage builds the Dockerfile's final stage with go-containerregistry
// instead of Docker: the files it copies from the build stage, and the
// config its USER, EXPOSE, LABEL, HEALTHCHECK and ENTRYPOINT set. Only the
// build stage's files this test knows how to produce may be copied; a new
// COPY fails the test until the test learns it.
func buildImage(t *testing.T, stages []stage) v1.Image {
	t.Helper()
	b, err := buildCommand(stages)
	require.NoError(t, err)
	sources := map[string]string{
		b.out:    stsproxyBinary(t),
		caBundle: caBundle, // the build image and this machine are both Debian
	}
	final := stages[len(stages)-1]
	require.Equal(t, "FROM scratch", "FROM "+final.ins[0].args, "the final stage starts from an empty image")
	vars := final.argDefaults()
	vars["VERSION"] = imageVersion // as docker build --build-arg VERSION=...

	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	dirs := map[string]bool{}
	for _, c := range final.all("COPY") {
		f := strings.Fields(c)
		require.Len(t, f, 3, "COPY --from=build SRC DST: %s", c)
		require.Equal(t, "--from=build", f[0], "the final stage copies only from the build stage: %s", c)
		src, ok := sources[f[1]]
		require.True(t, ok, "the image test does not know how to produce %s", f[1])
		data, err := os.ReadFile(src)
		require.NoError(t, err)
		dst := strings.TrimPrefix(f[2], "/")
		// Parent directories first, each once, as docker writes them.
		var parents []string
		for d := path.Dir(dst); d != "."; d = path.Dir(d) {
			parents = append(parents, d)
		}
		slices.Reverse(parents)
		for _, d := range parents {
			if !dirs[d] {
				dirs[d] = true
				require.NoError(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}))
			}
		}
		mode := int64(0o644)
		if st, err := os.Stat(src); err == nil && st.Mode()&0o111 != 0 {
			mode = 0o755
		}
		require.NoError(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: dst, Mode: mode, Size: int64(len(data))}))
		_, err = tw.Write(data)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	layerBytes := layerTar.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	require.NoError(t, err)

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	require.NoError(t, err)
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Labels = final.labels(vars)
	cf.Config.ExposedPorts = map[string]struct{}{}
	for _, e := range final.all("EXPOSE") {
		for _, p := range strings.Fields(e) {
			if !strings.Contains(p, "/") {
				p += "/tcp"
			}
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	for _, u := range final.all("USER") {
		cf.Config.User = u
	}
	for _, e := range final.all("ENTRYPOINT") {
		cf.Config.Entrypoint, err = jsonArgs(e)
		require.NoError(t, err, "ENTRYPOINT")
	}
	for _, h := range final.all("HEALTHCHECK") {
		cf.Config.Healthcheck, err = healthcheck(h)
		require.NoError(t, err)
	}
	img, err = mutate.ConfigFile(img, cf)
	require.NoError(t, err)
	return img
}

// imageFile is one entry of the image's file system.
type imageFile struct {
	hdr  *tar.Header
	path string // extracted copy, for regular files
}

// extract writes the image's flattened file system under dir and returns
// its entries by absolute path.
func extract(t *testing.T, img v1.Image, dir string) map[string]imageFile {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]imageFile{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		name := "/" + strings.TrimSuffix(path.Clean(hdr.Name), "/")
		f := imageFile{hdr: hdr}
		if hdr.Typeflag == tar.TypeReg {
			f.path = filepath.Join(dir, filepath.FromSlash(name))
			require.NoError(t, os.MkdirAll(filepath.Dir(f.path), 0o755))
			out, err := os.OpenFile(f.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(hdr.Mode)&0o755)
			require.NoError(t, err)
			_, err = io.Copy(out, tr)
			require.NoError(t, errors.Join(err, out.Close()))
		}
		files[name] = f
	}
	return files
}

// TestImage builds the image as an OCI layout, reads it back as a registry
// client would, and checks its config and file system, then runs the binary
// taken from the image.
func TestImage(t *testing.T) {
	stages, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	require.NoError(t, err)

	t.Run("build stage Go matches go.mod", func(t *testing.T) {
		gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
		require.NoError(t, err)
		m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
		require.NotNil(t, m)
		assert.Equal(t, string(m[1]), stages[0].argDefaults()["GO_VERSION"], "ARG GO_VERSION")
		assert.Contains(t, stages[0].all("FROM")[0], "--platform=$BUILDPLATFORM", "the build stage cross-compiles instead of emulating")
	})

	t.Run("docker build context holds every package the binary needs", func(t *testing.T) {
		ignore, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
		require.NoError(t, err)
		b, err := buildCommand(stages)
		require.NoError(t, err)
		cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", b.pkg)
		cmd.Dir = repoRoot
		out, err := cmd.Output()
		require.NoError(t, err)
		root, err := filepath.Abs(repoRoot)
		require.NoError(t, err)
		for dir := range strings.Lines(string(out)) {
			rel, err := filepath.Rel(root, strings.TrimSpace(dir))
			if err != nil || strings.HasPrefix(rel, "..") {
				continue // a module from the module cache
			}
			for pat := range strings.Lines(string(ignore)) {
				pat = strings.TrimSpace(pat)
				if pat == "" || strings.HasPrefix(pat, "#") || strings.Contains(pat, "*") {
					continue
				}
				assert.False(t, rel == pat || strings.HasPrefix(rel, pat+string(filepath.Separator)),
					"package %s is excluded from the docker build by .dockerignore's %q", rel, pat)
			}
		}
	})

	layoutDir := filepath.Join(t.TempDir(), "oci")
	lp, err := layout.Write(layoutDir, empty.Index)
	require.NoError(t, err)
	require.NoError(t, lp.AppendImage(buildImage(t, stages),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
		layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "stsproxy:" + imageVersion})))

	// Read it back from disk: everything below checks the layout, not the
	// in-memory image.
	idx, err := layout.ImageIndexFromPath(layoutDir)
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Len(t, im.Manifests, 1)
	assert.Equal(t, types.OCIManifestSchema1, im.Manifests[0].MediaType)
	img, err := idx.Image(im.Manifests[0].Digest)
	require.NoError(t, err)
	require.NoError(t, validate.Image(img), "digests and sizes of the layout")

	cf, err := img.ConfigFile()
	require.NoError(t, err)
	const entrypoint = "/usr/local/bin/stsproxy"
	t.Run("config", func(t *testing.T) {
		assert.Equal(t, "linux", cf.OS)
		assert.Equal(t, runtime.GOARCH, cf.Architecture)
		assert.Equal(t, "65532:65532", cf.Config.User)
		assert.Equal(t, []string{entrypoint}, cf.Config.Entrypoint)
		assert.Empty(t, cf.Config.Cmd)
		assert.Equal(t, map[string]struct{}{"8080/tcp": {}, "9090/tcp": {}}, cf.Config.ExposedPorts)
		assert.Equal(t, map[string]string{
			"org.opencontainers.image.title":       "stsproxy",
			"org.opencontainers.image.description": "Outbound HTTP proxy that attaches AWS STS web identity tokens",
			"org.opencontainers.image.source":      "https://github.com/stsauth/stsauth",
			"org.opencontainers.image.version":     imageVersion,
		}, cf.Config.Labels)
		require.NotNil(t, cf.Config.Healthcheck)
		assert.Equal(t, []string{"CMD", entrypoint, "healthcheck"}, cf.Config.Healthcheck.Test, "exec form: no shell")
		assert.Greater(t, cf.Config.Healthcheck.Timeout, 5*time.Second, "longer than the check's own timeout")
		for _, e := range cf.Config.Env {
			assert.False(t, strings.HasPrefix(e, "SSL_CERT_"), "the image must not move the CA roots: %s", e)
		}
	})

	root := t.TempDir()
	files := extract(t, img, root)
	bin := files[entrypoint]

	t.Run("file system", func(t *testing.T) {
		require.NotNil(t, bin.hdr, "%s in the image", entrypoint)
		assert.Equal(t, int64(0o755), bin.hdr.Mode&0o7777)
		for name, f := range files {
			base := path.Base(name)
			assert.NotContains(t, []string{"sh", "bash", "ash", "dash", "busybox"}, base, "a shell in the image: %s", name)
			assert.Zero(t, f.hdr.Uid, "%s owned by root, so user 65532 cannot change it", name)
			assert.Zero(t, f.hdr.Mode&0o022, "%s writable by group or others", name)
		}
		var regular []string
		for name, f := range files {
			if f.hdr.Typeflag == tar.TypeReg {
				regular = append(regular, name)
			}
		}
		slices.Sort(regular)
		assert.Equal(t, []string{caBundle, entrypoint}, regular, "the image holds the binary and the CA roots, nothing else")
	})

	t.Run("static binary", func(t *testing.T) {
		require.NotEmpty(t, bin.path)
		ef, err := elf.Open(bin.path)
		require.NoError(t, err)
		defer ef.Close()
		for _, p := range ef.Progs {
			assert.NotEqual(t, elf.PT_INTERP, p.Type, "a dynamic loader: the binary is not static")
			assert.NotEqual(t, elf.PT_DYNAMIC, p.Type, "a dynamic section: the binary is not static")
		}
		libs, err := ef.ImportedLibraries()
		require.NoError(t, err)
		assert.Empty(t, libs)

		bi, err := buildinfo.ReadFile(bin.path)
		require.NoError(t, err)
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		assert.Equal(t, "0", settings["CGO_ENABLED"])
		assert.Equal(t, "true", settings["-trimpath"])
		assert.Equal(t, "linux", settings["GOOS"])
		// With -trimpath, go does not record -ldflags; "version" checks it.
	})

	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin.path, "--version").Output()
		require.NoError(t, err)
		assert.Equal(t, "stsproxy "+imageVersion+"\n", string(out))
	})

	t.Run("serves /healthz and passes its HEALTHCHECK", func(t *testing.T) {
		testServeHealthz(t, bin.path, entrypoint, cf.Config.Healthcheck.Test)
	})

	t.Run("a TLS client in the image finds the CA roots", func(t *testing.T) {
		ca := files[caBundle]
		require.NotEmpty(t, ca.path, "%s in the image", caBundle)
		data, err := os.ReadFile(ca.path)
		require.NoError(t, err)
		n := 0
		for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
			_, err := x509.ParseCertificate(block.Bytes)
			require.NoError(t, err)
			n++
		}
		assert.Greater(t, n, 50, "certificates in %s", caBundle)

		// Go's root loading, pointed at the image's bundle alone, verifies a
		// real public chain the way a TLS client does; pointed at an empty
		// bundle it does not, so the check can fail.
		out, err := verifyChainWith(t, ca.path)
		require.NoError(t, err, "%s", out)
		assert.Equal(t, "www.google.com <- GTS CA 1C3 <- GTS Root R1\n", out)

		empty := filepath.Join(t.TempDir(), "empty.crt")
		require.NoError(t, os.WriteFile(empty, nil, 0o644))
		out, err = verifyChainWith(t, empty)
		require.Error(t, err)
		assert.Contains(t, out, "x509:")
	})
}

// testServeHealthz runs the image's binary as the proxy (with its in-process
// STS emulator, so no AWS is needed), then runs the image's HEALTHCHECK
// command against it, and again after the proxy stopped.
func testServeHealthz(t *testing.T, bin, entrypoint string, check []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	home := t.TempDir()
	env := []string{"HOME=" + home, "AWS_EC2_METADATA_DISABLED=true"}
	proxy := exec.CommandContext(ctx, bin, "--local-sts", "--listen-addr=127.0.0.1:0", "--metrics-listen-addr=127.0.0.1:0")
	proxy.Env = env
	stderr, err := proxy.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, proxy.Start())
	exited := make(chan error, 1)
	metricsAddr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec struct {
				Msg         string `json:"msg"`
				MetricsAddr string `json:"metrics_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				metricsAddr <- rec.MetricsAddr
			}
		}
		exited <- proxy.Wait()
	}()
	var addr string
	select {
	case addr = <-metricsAddr:
	case err := <-exited:
		t.Fatalf("stsproxy exited before listening: %v", err)
	case <-ctx.Done():
		t.Fatal("stsproxy did not log its listening addresses")
	}

	resp, err := http.Get("http://" + addr + "/healthz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "ok\n", string(body))

	require.Equal(t, "CMD", check[0])
	require.Equal(t, entrypoint, check[1], "the health check runs the image's binary")
	healthcheck := func() (string, error) {
		cmd := exec.CommandContext(ctx, bin, check[2:]...)
		cmd.Env = append(env, "METRICS_LISTEN_ADDR="+addr) // the container's env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := healthcheck()
	require.NoError(t, err, "%s", out)
	assert.Equal(t, "ok\n", out)

	require.NoError(t, proxy.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "stsproxy exit on SIGTERM")
	case <-ctx.Done():
		t.Fatal("stsproxy did not stop on SIGTERM")
	}
	out, err = healthcheck()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "%s", out)
	assert.Equal(t, 1, ee.ExitCode())
}

// verifyChainEnv makes the test binary, re-executed, verify the recorded
// chain against the system roots and exit.
const verifyChainEnv = "STSAUTH_DEPLOY_VERIFY_CHAIN"

// verifyChainWith re-executes the test binary with SSL_CERT_FILE set to
// bundle (and SSL_CERT_DIR to an empty directory), the way Go reads the
// system roots at /etc/ssl/certs/ca-certificates.crt inside the image, and
// returns what it printed.
func verifyChainWith(t *testing.T, bundle string) (string, error) {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe)
	cmd.Env = []string{verifyChainEnv + "=1", "SSL_CERT_FILE=" + bundle, "SSL_CERT_DIR=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// verifyChainMain verifies testdata/www.google.com-chain.pem (leaf and
// intermediate, from the Go standard library's tests) at a time it was
// valid, against the system roots, as crypto/tls does in a handshake. It
// prints the chain and returns the exit code.
func verifyChainMain() int {
	data, err := os.ReadFile(filepath.Join("testdata", "www.google.com-chain.pem"))
	if err != nil {
		fmt.Println(err)
		return 1
	}
	var certs []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		certs = append(certs, c)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{
		DNSName:       "www.google.com",
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   time.Unix(1677615892, 0), // when the leaf was valid
	})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	var names []string
	for _, c := range chains[0] {
		names = append(names, c.Subject.CommonName)
	}
	fmt.Println(strings.Join(names, " <- "))
	return 0
}
