package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/file"
	"blockcache/internal/bdev/uring"
	"blockcache/internal/jsonrpc"
)

// TestUringCreateWithoutIOUring: where the kernel refuses io_uring,
// bdev_uring_create answers -95 "Operation not supported" with the reason
// as data, and registers nothing.
func TestUringCreateWithoutIOUring(t *testing.T) {
	a := &API{svc: Services{Registry: bdev.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, bases: newBaseTable(), exports: newExportTable()}
	var asked file.Options
	refuse := func(name, path string, opts file.Options) (*file.Device, error) {
		asked = opts
		// What file.Open returns when uring.New fails so.
		return nil, fmt.Errorf("open file device %q on %s: io_uring_setup: operation not permitted: disabled by the sysctl kernel.io_uring_disabled = 2: %w", name, path, uring.ErrUnavailable)
	}
	_, err := a.uringCreate(json.RawMessage(`{"name":"U0","filename":"/var/tmp/u0.img"}`), refuse)
	var je *jsonrpc.Error
	if !errors.As(err, &je) {
		t.Fatalf("bdev_uring_create without io_uring: %v, want a JSON-RPC error", err)
	}
	if je.Code != -95 || je.Message != "Operation not supported" || !strings.Contains(je.Data, "kernel.io_uring_disabled") {
		t.Fatalf("bdev_uring_create without io_uring: %+v, want -95 Operation not supported naming the sysctl", je)
	}
	if !asked.Direct || !asked.BufferedFallback {
		t.Fatalf("bdev_uring_create opened with %+v, want direct with a buffered fallback", asked)
	}
	if _, err := a.svc.Registry.Lookup("U0"); err == nil || len(a.bases.list()) != 0 {
		t.Fatal("a bdev was registered though its creation failed")
	}
	// Bad block sizes are refused before anything is opened.
	for _, bs := range []int{256, 1536, 3000} {
		_, err := a.uringCreate(json.RawMessage(fmt.Sprintf(`{"name":"U1","filename":"/x","block_size":%d}`, bs)),
			func(string, string, file.Options) (*file.Device, error) { panic(errors.New("opened")) })
		if !errors.As(err, &je) || je.Code != -22 {
			t.Fatalf("block_size %d: %v, want -22", bs, err)
		}
	}
}
