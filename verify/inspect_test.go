package verify

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInspect(t *testing.T) {
	t.Parallel()
	clock := newClock()
	s := startSTS(t, clock, nil)
	for _, alg := range []string{"RS256", "ES384"} {
		tok := mint(t, s, alg, "https://api.example.com")
		u, err := Inspect(tok)
		require.NoError(t, err)
		assert.Equal(t, s.Issuer(), u.Issuer)
		assert.Equal(t, alg, u.Algorithm)
		assert.NotEmpty(t, u.KeyID)
	}
	for _, bad := range []string{"", "a.b", "not a token", strings.Repeat("a", MaxTokenSize+1)} {
		_, err := Inspect(bad)
		require.ErrorIs(t, err, ErrMalformed, "Inspect(%.20q)", bad)
	}
	_, err := Inspect("e30.e30.e30") // {} header: no alg
	require.ErrorIs(t, err, ErrAlgorithm)
}
