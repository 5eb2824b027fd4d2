package stsauth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewAudience(t *testing.T) {
	t.Parallel()
	long := "https://" + strings.Repeat("a", MaxAudienceLength-8)
	eleven := make([]string, 11)
	for i := range eleven {
		eleven[i] = string(rune('a' + i))
	}
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr string
	}{
		{name: "one", in: []string{"https://api.example.com"}, want: []string{"https://api.example.com"}},
		{name: "trimmed", in: []string{"  https://api.example.com\t"}, want: []string{"https://api.example.com"}},
		{name: "sorted and de-duplicated", in: []string{"b", "a", "b", " a"}, want: []string{"a", "b"}},
		{name: "ten distinct", in: eleven[:10], want: eleven[:10]},
		{name: "eleven duplicates of ten", in: append(eleven[:10:10], "a"), want: eleven[:10]},
		{name: "longest value", in: []string{long}, want: []string{long}},
		{name: "comma is a character", in: []string{"a,b"}, want: []string{"a,b"}},
		{name: "none", in: nil, wantErr: "no audience given, want 1 to 10 values"},
		{name: "empty", in: []string{""}, wantErr: "empty value"},
		{name: "only spaces", in: []string{"   "}, wantErr: "empty value"},
		{name: "eleven", in: eleven, wantErr: "11 distinct values, want 1 to 10"},
		{name: "too long", in: []string{long + "a"}, wantErr: "value of 1001 characters, want 1 to 1000"},
		{name: "inner space", in: []string{"https://a b"}, wantErr: `"https://a b" contains white space`},
		{name: "newline", in: []string{"a\nb"}, wantErr: "contains white space"},
		{name: "control", in: []string{"a\x00b"}, wantErr: "control character"},
		{name: "bad UTF-8", in: []string{"a\xffb"}, wantErr: "not valid UTF-8"},
		{name: "one bad among good", in: []string{"good", ""}, wantErr: "empty value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := NewAudience(tc.in...)
			if tc.wantErr != "" {
				require.ErrorIs(t, err, ErrInvalidAudience)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.True(t, got.IsZero())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got.Values())
			assert.Equal(t, len(tc.want), got.Len())
		})
	}
}

func TestAudienceKeysAreCollisionFree(t *testing.T) {
	t.Parallel()
	assert.NotEqual(t, MustAudience("a,b"), MustAudience("a", "b"))
	assert.NotEqual(t, MustAudience("ab"), MustAudience("a", "b"))
	assert.Equal(t, MustAudience("b", "a"), MustAudience("a", "b", "a"))
	assert.Equal(t, "[a b]", MustAudience("b", "a").String())
}

func TestOriginAudience(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url  string
		want string
	}{
		{"https://API.Example.com/path?q=1", "https://api.example.com"},
		{"https://api.example.com:8443/", "https://api.example.com"},
		{"HTTP://api.example.com", "http://api.example.com"},
		{"http://[2001:DB8::1]:8080/", "http://[2001:db8::1]"},
		{"http://[::1]/", "http://[::1]"},
		{"http://127.0.0.1:9000/", "http://127.0.0.1"},
	}
	for _, tc := range tests {
		got, err := HostAudience{}.ResolveAudience(httptest.NewRequest("GET", tc.url, nil))
		require.NoError(t, err, tc.url)
		assert.Equal(t, []string{tc.want}, got.Values(), tc.url)
	}
	for _, host := range []string{"", "[::1", "a b", "[nope]:80"} {
		_, err := OriginAudience("https", host)
		assert.ErrorIs(t, err, ErrInvalidAudience, "host %q", host)
	}
	_, err := OriginAudience("", "example.com")
	assert.ErrorIs(t, err, ErrInvalidAudience)
}

func TestResolvers(t *testing.T) {
	t.Parallel()
	req := httptest.NewRequest("GET", "https://x.example.com/", nil)
	got, err := StaticAudience("b", "a").ResolveAudience(req)
	require.NoError(t, err)
	assert.Equal(t, MustAudience("a", "b"), got)

	_, err = FixedAudience{}.ResolveAudience(req)
	assert.ErrorIs(t, err, ErrInvalidAudience)

	fn := AudienceFunc(func(r *http.Request) (Audience, error) { return NewAudience(r.Host) })
	got, err = fn.ResolveAudience(req)
	require.NoError(t, err)
	assert.Equal(t, []string{"x.example.com"}, got.Values())

	assert.Panics(t, func() { StaticAudience("") })
}

// FuzzNewAudience checks that normalization never panics, that valid sets
// keep their invariants, and that the key is collision-free: two sets are
// equal exactly when their canonical values are.
func FuzzNewAudience(f *testing.F) {
	for _, seed := range [][2]string{
		{"https://api.example.com", ""}, {"a,b", "a"}, {"b a", "a"}, {" x ", "x"},
		{"", ""}, {"\x00", "\u2028"}, {strings.Repeat("é", 1001), "a"}, {"a\xff", "b"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		aud, err := NewAudience(a, b)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidAudience)
			require.True(t, aud.IsZero())
			return
		}
		vals := aud.Values()
		require.GreaterOrEqual(t, len(vals), 1)
		require.LessOrEqual(t, len(vals), 2)
		for i, v := range vals {
			require.NotEmpty(t, v)
			require.True(t, utf8.ValidString(v))
			require.False(t, strings.ContainsAny(v, " \t\r\n"))
			if i > 0 {
				require.Less(t, vals[i-1], v, "sorted and distinct")
			}
		}
		again, err := NewAudience(vals...)
		require.NoError(t, err)
		require.Equal(t, aud, again, "canonical form is a fixed point")
		single, err := NewAudience(a)
		if err == nil {
			require.Equal(t, len(single.Values()) == len(vals) && single.Values()[0] == vals[0], single == aud)
		}
	})
}
