package ststest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIMDS(t *testing.T) {
	t.Parallel()
	m := NewIMDS("eu-west-3")
	t.Cleanup(m.Close)
	get := func(method, path string) (int, string) {
		req, err := http.NewRequest(method, m.URL+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get(http.MethodPut, "/latest/api/token")
	assert.Equal(t, http.StatusOK, code)
	assert.NotEmpty(t, body)
	code, body = get(http.MethodGet, "/latest/dynamic/instance-identity/document")
	require.Equal(t, http.StatusOK, code)
	var doc map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &doc))
	assert.Equal(t, "eu-west-3", doc["region"])
	code, role := get(http.MethodGet, "/latest/meta-data/iam/security-credentials/")
	require.Equal(t, http.StatusOK, code)
	code, _ = get(http.MethodGet, "/latest/meta-data/iam/security-credentials/"+role)
	assert.Equal(t, http.StatusOK, code)

	m.SetRole("")
	code, _ = get(http.MethodGet, "/latest/meta-data/iam/security-credentials/")
	assert.Equal(t, http.StatusNotFound, code, "no instance profile")
	assert.Equal(t, 5, m.Calls())

	m.SetHang(true)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, m.URL+"/latest/api/token", nil)
	require.NoError(t, err)
	_, err = http.DefaultClient.Do(req)
	require.ErrorIs(t, err, context.DeadlineExceeded, "a hanging IMDS answers nothing")

	env := m.Env("/tmp/x")
	assert.Equal(t, m.URL, env["AWS_EC2_METADATA_SERVICE_ENDPOINT"])
	assert.Equal(t, "", env["AWS_REGION"])
	assert.Equal(t, "/tmp/x/config", env["AWS_CONFIG_FILE"])
}
