package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHandlerEchoesAndNeverLogsSignature(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	srv := httptest.NewServer(handler(slog.New(slog.NewJSONHandler(&logs, nil)), newVerifier()))
	t.Cleanup(srv.Close)

	b64 := base64.RawURLEncoding.EncodeToString
	jwt := b64([]byte(`{"alg":"RS256"}`)) + "." + b64([]byte(`{"aud":"x"}`)) + ".SIGNATUREPART"
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/a/b?q=1", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+jwt)
	req.Header.Set("X-Test", "v")
	res, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer res.Body.Close()

	var got echo
	require.NoError(t, json.NewDecoder(res.Body).Decode(&got))
	assert.Equal(t, "POST", got.Method)
	assert.Equal(t, "/a/b", got.Path)
	assert.Equal(t, "q=1", got.Query)
	assert.Equal(t, []string{"v"}, got.Headers["X-Test"])
	assert.Contains(t, logs.String(), `"authorization":true`)
	assert.Contains(t, logs.String(), `"aud":"x"`)
	assert.False(t, strings.Contains(logs.String(), "SIGNATUREPART"), "log has the signature: %s", logs.String())
}

func TestDecodeBearer(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "Basic abc", "Bearer a.b", "Bearer !!.!!.x", "Bearer e30.bm90anNvbg.x"} {
		_, _, ok := decodeBearer(in)
		assert.False(t, ok, "decodeBearer(%q)", in)
	}
}
