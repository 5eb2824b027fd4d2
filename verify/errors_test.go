package verify

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestErrorText(t *testing.T) {
	t.Parallel()
	cause := errors.New("connection refused")
	err := newError(ErrKeysUnavailable, "fetching keys of https://x", cause)
	assert.Equal(t, "verify: issuer keys unavailable: fetching keys of https://x: connection refused", err.Error())
	assert.ErrorIs(t, err, ErrKeysUnavailable)
	assert.ErrorIs(t, err, cause)
	assert.Equal(t, "verify: token expired", newError(ErrExpired, "", nil).Error())
	assert.Equal(t, "verify: invalid token", (&Error{}).Error(), "a zero Error does not panic")
	assert.Empty(t, (&Error{}).Unwrap())
}
