package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/jsonrpc"
)

// TestRAMBdevCreate: bdev_malloc_create and bdev_null_create refuse
// metadata, DIF and a bad uuid with -22 and register nothing; what they do
// create is registered under its name with its config entry.
func TestRAMBdevCreate(t *testing.T) {
	a := &API{svc: Services{Registry: bdev.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, bases: newBaseTable(), exports: newExportTable()}
	creates := map[string]func(context.Context, json.RawMessage) (any, error){
		"bdev_malloc_create": a.mallocCreate, "bdev_null_create": a.nullCreate,
	}
	for method, create := range creates {
		for _, tc := range []struct{ extra, data string }{
			{`"md_size":8`, "metadata and DIF"},
			{`"dif_type":1`, "metadata and DIF"},
			{`"uuid":"not-a-uuid"`, `uuid "not-a-uuid"`},
		} {
			_, err := create(context.Background(), json.RawMessage(`{"name":"R","num_blocks":16,"block_size":512,`+tc.extra+`}`))
			var je *jsonrpc.Error
			if !errors.As(err, &je) || je.Code != -22 || !strings.Contains(je.Data, tc.data) {
				t.Fatalf("%s with %s: %v, want -22 saying %q", method, tc.extra, err, tc.data)
			}
		}
		if len(a.bases.list()) != 0 {
			t.Fatalf("%s registered a bdev though it refused the parameters", method)
		}
	}
	for _, tc := range []struct{ method, name, id string }{
		{"bdev_malloc_create", "M", "6e1b9bd8-4a7a-4b2e-9f44-5a0f5d3b1c01"},
		{"bdev_null_create", "N", "6e1b9bd8-4a7a-4b2e-9f44-5a0f5d3b1c02"},
	} {
		method, name, id := tc.method, tc.name, tc.id
		res, err := creates[method](context.Background(), json.RawMessage(`{"name":"`+name+`","num_blocks":16,"block_size":512,"uuid":"`+id+`"}`))
		if err != nil || res != name {
			t.Fatalf("%s: %v, %v; want its name", method, res, err)
		}
		b := a.bases.get(name)
		if b == nil {
			t.Fatalf("%s: %s not among the base bdevs", method, name)
		}
		cfg, err := json.Marshal(b.config())
		if err != nil || !strings.Contains(string(cfg), `"method":"`+method+`"`) || !strings.Contains(string(cfg), `"uuid":"`+id+`"`) {
			t.Fatalf("%s: config entry %s, %v", method, cfg, err)
		}
	}
	var names []string
	for _, b := range a.bases.list() {
		names = append(names, b.name)
	}
	if slices.Sort(names); !slices.Equal(names, []string{"M", "N"}) {
		t.Fatalf("base bdevs %v, want M and N", names)
	}
}
