package bdevtest

import (
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev/malloc"
)

// NewMalloc returns a RAM device of blocks 512-byte blocks, with the nil
// UUID, closed when the test ends.
func NewMalloc(t testing.TB, name string, blocks uint64) *malloc.Device {
	t.Helper()
	m, err := malloc.New(name, uuid.Nil, 512, blocks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}
