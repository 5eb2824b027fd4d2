package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestLogThrottle(t *testing.T) {
	now := time.Unix(0, 0)
	th := &logThrottle{interval: time.Second, now: func() time.Time { return now }}

	ok, n := th.allow()
	assert.True(t, ok)
	assert.Zero(t, n)
	for range 99 {
		ok, _ := th.allow()
		assert.False(t, ok, "held back within the interval")
	}
	now = now.Add(time.Second)
	ok, n = th.allow()
	assert.True(t, ok)
	assert.Equal(t, 99, n, "the next record reports what was held back")
}
