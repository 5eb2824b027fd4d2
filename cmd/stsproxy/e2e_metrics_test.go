package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/stsauth/stsauth"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// series is one scraped Prometheus sample: its name, labels and value.
type series struct {
	name   string
	labels map[string]string
	value  string
}

var (
	sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
	labelPair  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// parseExposition parses the Prometheus text format into samples, skipping
// comments.
func parseExposition(t *testing.T, body string) []series {
	t.Helper()
	var out []series
	for line := range strings.Lines(body) {
		line = strings.TrimSuffix(line, "\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleLine.FindStringSubmatch(line)
		require.NotNil(t, m, "unparsable line %q", line)
		s := series{name: m[1], labels: map[string]string{}, value: m[3]}
		for _, lp := range labelPair.FindAllStringSubmatch(m[2], -1) {
			s.labels[lp[1]] = lp[2]
		}
		out = append(out, s)
	}
	return out
}

// labelString renders labels sorted, without the otel_scope_* ones, so
// series compare as strings: a="1",b="2".
func labelString(labels map[string]string) string {
	var parts []string
	for k, v := range labels {
		if !strings.HasPrefix(k, "otel_scope_") {
			parts = append(parts, fmt.Sprintf("%s=%q", k, v))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// TestE2EMetricsParity drives the binary through a success, an STS failure
// and a network failure, scrapes /metrics and compares the series with the
// labels and values of aws-outbound-jwt-proxy (docs/operations.md there):
// result="ok" and no error_class on success, error_class="transport" or the
// STS code on errors, audiences joined by ",", token_result ok, fetch_error
// or resolver_error, server_address, server_port (only when not the scheme's
// default) and error_type (only on failures) on the client histogram, and
// the otel_scope_* labels on every series of the OpenTelemetry instruments.
func TestE2EMetricsParity(t *testing.T) {
	t.Parallel()
	sts := newSTS(t)
	up := newRecordingUpstream(t, nil)
	_, upPort, _ := strings.Cut(up.host(), ":")
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadHost := dead.Addr().String()
	_, deadPort, _ := strings.Cut(deadHost, ":")
	require.NoError(t, dead.Close()) // connections to it are now refused

	p := startProxy(t, sts)
	c := testClient(t)
	send := func(host string, want int) {
		t.Helper()
		status, body := get(t, c, "http://"+p.addr+"/x", map[string]string{"X-Upstream-Host": host})
		require.Equal(t, want, status, "%s: %s", host, body)
	}
	send(up.host(), http.StatusOK) // success
	sts.FailAll("AccessDenied")
	send("localhost:"+upPort, http.StatusBadGateway) // STS failure, a fresh audience
	sts.Reset()
	send(deadHost, http.StatusBadGateway) // network failure: connection refused

	status, body := get(t, c, "http://"+p.metricsAddr+"/metrics", nil)
	require.Equal(t, http.StatusOK, status)
	all := parseExposition(t, body)

	// HostAudience drops the port: the refused request reuses the first
	// request's cached token.
	okAud, failAud := "http://127.0.0.1", "http://localhost"
	// want lists, per metric, every series expected (labels but
	// otel_scope_*) and its value; "" accepts any value.
	want := map[string]map[string]string{
		"token_fetch_count_total": {
			fmt.Sprintf(`audience=%q,result="ok"`, okAud):                                 "1",
			fmt.Sprintf(`audience=%q,error_class="AccessDenied",result="error"`, failAud): "1",
		},
		"token_cache_miss_count_total": {
			fmt.Sprintf(`audience=%q`, okAud):   "1",
			fmt.Sprintf(`audience=%q`, failAud): "1",
		},
		"token_cache_hit_count_total": {
			fmt.Sprintf(`audience=%q`, okAud):   "1",
			fmt.Sprintf(`audience=%q`, failAud): "0",
		},
		"http_client_request_duration_seconds_count": {
			fmt.Sprintf(`http_request_method="GET",server_address="127.0.0.1",server_port=%q,token_result="ok"`, upPort):                                   "1",
			fmt.Sprintf(`http_request_method="GET",server_address="localhost",server_port=%q,token_result="fetch_error"`, upPort):                          "1",
			fmt.Sprintf(`error_type="connection_refused",http_request_method="GET",server_address="127.0.0.1",server_port=%q,token_result="ok"`, deadPort): "1",
		},
		"http_server_request_duration_seconds_count": {
			`http_request_method="GET",http_response_status_code="200"`: "1",
			`http_request_method="GET",http_response_status_code="502"`: "2",
		},
		"http_server_active_requests": {``: "0"},
		"token_cached_audiences":      {``: "2"},
	}
	got := map[string]map[string]string{}
	for _, s := range all {
		if want[s.name] != nil {
			if got[s.name] == nil {
				got[s.name] = map[string]string{}
			}
			got[s.name][labelString(s.labels)] = s.value
		}
	}
	assert.Equal(t, want, got)

	// Every series of the OpenTelemetry instruments carries its scope, as
	// in the original; the Go and process collectors' series have none.
	scopes := map[string]bool{}
	otel := 0
	for _, s := range all {
		if strings.HasPrefix(s.name, "go_") || strings.HasPrefix(s.name, "process_") || strings.HasPrefix(s.name, "promhttp_") {
			continue
		}
		otel++
		assert.Contains(t, s.labels, "otel_scope_name", s.name)
		assert.Contains(t, s.labels, "otel_scope_version", s.name)
		assert.Contains(t, s.labels, "otel_scope_schema_url", s.name)
		assert.NotEmpty(t, s.labels["otel_scope_version"], s.name)
		scopes[s.labels["otel_scope_name"]] = true
	}
	assert.Positive(t, otel)
	assert.Equal(t, map[string]bool{"github.com/stsauth/stsauth": true, meterName: true}, scopes)
	assert.NotContains(t, body, `error_class=""`)
	assert.NotContains(t, body, `result="success"`)
}

// TestClientMetricsAttributes checks the client histogram's attributes
// the end-to-end test cannot reach: resolver_error, a refused host (not
// recorded, as nothing was sent), default ports and the cap on upstream
// labels.
func TestClientMetricsAttributes(t *testing.T) {
	t.Parallel()
	pm, reader := newTestProxyMetrics(t)
	ok := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	})
	send := func(rt http.RoundTripper, url string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, url, nil)
		require.NoError(t, err)
		if res, err := (&instrumentedTransport{next: rt, metrics: pm}).RoundTrip(req); err == nil {
			res.Body.Close()
		}
	}
	resolverFails := &stsauth.Transport{Source: nil, Base: ok, Audience: markedResolver{next: stsauth.AudienceFunc(func(*http.Request) (stsauth.Audience, error) {
		return stsauth.Audience{}, errors.New("no audience")
	})}}
	send(resolverFails, "https://r.example/")
	send(roundTripperFunc(func(*http.Request) (*http.Response, error) {
		return nil, fmt.Errorf("stsauth: %w: nope", stsauth.ErrHostNotAllowed)
	}), "https://refused.example/")
	send(ok, "https://api.example:443/")
	send(ok, "http://api.example:80/")
	send(ok, "http://api.example:8080/")
	for i := range maxServerAddressLabels + 5 {
		send(ok, fmt.Sprintf("https://h%d.example/", i))
	}

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	got := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "http.client.request.duration" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				got[dp.Attributes.Encoded(attribute.DefaultEncoder())] = dp.Count
			}
		}
	}
	assert.Equal(t, uint64(1), got["http.request.method=POST,server.address=r.example,token_result=resolver_error"])
	assert.Equal(t, uint64(2), got["http.request.method=POST,server.address=api.example,token_result=ok"], "default ports carry no server.port")
	assert.Equal(t, uint64(1), got["http.request.method=POST,server.address=api.example,server.port=8080,token_result=ok"])
	// r.example and api.example:443/80/8080 took 4 labels before h0..
	assert.Equal(t, uint64(9), got["http.request.method=POST,server.address=_other,token_result=ok"])
	for k := range got {
		assert.NotContains(t, k, "refused.example", "a refused host is not an outbound request")
	}
	assert.Len(t, got, 100, "r.example, api.example (443 and 80 share one), api.example:8080, h0 to h95, _other")
}

// newTestProxyMetrics returns the proxy's instruments on an SDK meter
// provider, with the reader that collects them.
func newTestProxyMetrics(t *testing.T) (*proxyMetrics, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	pm, err := newProxyMetrics(mp)
	require.NoError(t, err)
	return pm, reader
}
