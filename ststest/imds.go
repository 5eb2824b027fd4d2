package ststest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// An IMDS is a fake of the EC2 instance metadata service on loopback, for
// tests of code that asks it for the instance's Region or its role's
// credentials. Point the AWS SDK at it with
// AWS_EC2_METADATA_SERVICE_ENDPOINT=URL (or imds.Options.Endpoint). It
// answers IMDSv2 token requests, the instance identity document (with
// Region) and the role credentials under /latest/meta-data/iam/.
type IMDS struct {
	// URL is the base URL of the fake, http://127.0.0.1:port.
	URL string

	srv   *httptest.Server
	calls atomic.Int64

	mu     sync.Mutex // guards the fields below
	region string
	role   string // empty: no instance profile
	hang   bool
}

// NewIMDS starts a fake IMDS of an instance in region with an instance
// profile; an empty region answers none. The caller calls Close.
func NewIMDS(region string) *IMDS {
	m := &IMDS{region: region, role: "ststest-instance-role"}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	m.URL = m.srv.URL
	return m
}

// Close stops the fake, ending requests it holds.
func (m *IMDS) Close() {
	m.srv.CloseClientConnections()
	m.srv.Close()
}

// SetHang makes the fake accept requests and never answer them (until the
// request is cancelled or the fake closed), as IMDS looks from a container
// whose hop limit is too low, or from a network that drops its packets.
func (m *IMDS) SetHang(hang bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hang = hang
}

// SetRole sets the instance profile's role name; empty means the instance
// has none, so credential requests find no role.
func (m *IMDS) SetRole(role string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.role = role
}

// Env returns the environment that points the AWS SDK at the fake and at
// nothing else: no region, no credentials or profile, the shared config and
// credentials files under dir (which the caller creates), and instance
// metadata at [IMDS.URL], so the real 169.254.169.254 is never contacted.
// Apply it with t.Setenv, or pass it to a child process.
func (m *IMDS) Env(dir string) map[string]string {
	env := map[string]string{
		"AWS_CONFIG_FILE":                   filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE":       filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_SERVICE_ENDPOINT": m.URL,
	}
	for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_EC2_METADATA_DISABLED",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS"} {
		env[k] = ""
	}
	return env
}

// Calls returns how many requests the fake has received.
func (m *IMDS) Calls() int { return int(m.calls.Load()) }

func (m *IMDS) serve(w http.ResponseWriter, r *http.Request) {
	m.calls.Add(1)
	m.mu.Lock()
	region, role, hang := m.region, m.role, m.hang
	m.mu.Unlock()
	if hang {
		<-r.Context().Done()
		return
	}
	switch {
	case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", r.Header.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds"))
		_, _ = w.Write([]byte("ststest-imds-token"))
	case r.Method != http.MethodGet:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	case r.URL.Path == "/latest/dynamic/instance-identity/document" && region != "":
		writeJSONValue(w, map[string]string{"region": region, "accountId": DefaultAccountID, "instanceId": "i-00000000000000000"})
	case r.URL.Path == "/latest/meta-data/iam/security-credentials/" && role != "":
		_, _ = w.Write([]byte(role))
	case role != "" && r.URL.Path == "/latest/meta-data/iam/security-credentials/"+role:
		writeJSONValue(w, map[string]string{
			"Code":            "Success",
			"Type":            "AWS-HMAC",
			"AccessKeyId":     "ASIASTSTESTIMDS00000",
			"SecretAccessKey": "ststest-imds-secret",
			"Token":           "ststest-imds-session",
			"Expiration":      time.Now().Add(6 * time.Hour).UTC().Format(time.RFC3339),
			"LastUpdated":     time.Now().UTC().Format(time.RFC3339),
		})
	default:
		http.NotFound(w, r)
	}
}

// writeJSONValue writes v as a JSON response.
func writeJSONValue(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
