package ststest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test, example or server leaks a goroutine.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
