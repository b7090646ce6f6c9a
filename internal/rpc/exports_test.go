package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/jsonrpc"
	"blockcache/internal/nbd"
	"blockcache/internal/vbdev"
)

// exportAPI is a full API (registry, OCF manager, NBD server) called as
// rpc.py would, with its log.
type exportAPI struct {
	*API
	rpc *jsonrpc.Server
	nbd *nbd.Server
	log *syncBuffer
}

func newExportAPI(t *testing.T) *exportAPI {
	t.Helper()
	x := &exportAPI{log: &syncBuffer{}, rpc: jsonrpc.NewServer(jsonrpc.Options{InitialState: jsonrpc.StateRuntime})}
	log := slog.New(slog.NewTextHandler(x.log, nil))
	reg := bdev.NewRegistry()
	ocf := vbdev.NewManager(reg, log)
	srv, err := nbd.NewServer(log, nbd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	x.nbd = srv
	x.API = Register(x.rpc, Services{Registry: reg, OCF: ocf, NBD: srv, Log: log,
		NBDURI: func(name string) string { return "nbd:///" + name }})
	t.Cleanup(func() {
		x.StopExports()
		ocf.Shutdown(false)
		ocf.Close()
		for _, d := range reg.List() {
			if d, err := reg.Unregister(d.Info().Name); err == nil {
				d.Close()
			}
		}
	})
	return x
}

func (x *exportAPI) call(t *testing.T, ctx context.Context, method, params string) (json.RawMessage, error) {
	t.Helper()
	var raw json.RawMessage
	if params != "" {
		raw = json.RawMessage(params)
	}
	return x.rpc.Call(ctx, method, raw)
}

func (x *exportAPI) must(t *testing.T, method, params string) json.RawMessage {
	t.Helper()
	res, err := x.call(t, t.Context(), method, params)
	if err != nil {
		t.Fatalf("%s %s: %v", method, params, err)
	}
	return res
}

// served reports whether the NBD server has an export called name.
func (x *exportAPI) served(name string) bool {
	return slices.ContainsFunc(x.nbd.Exports(), func(e nbd.Export) bool { return e.Name == name })
}

// disks returns nbd_get_disks' answer, with include_pending if all.
func (x *exportAPI) disks(t *testing.T, all bool) []nbdDiskObject {
	t.Helper()
	var out []nbdDiskObject
	if err := json.Unmarshal(x.must(t, "nbd_get_disks", fmt.Sprintf(`{"include_pending":%v}`, all)), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// configured returns the bdev names of the nbd subsystem's config.
func (x *exportAPI) configured(t *testing.T) []string {
	t.Helper()
	entries, err := x.SubsystemConfig("nbd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Params.(nbdStartParams).BdevName)
	}
	return out
}

// volume creates a wt OCF volume Vol on malloc bdevs Cache and Core.
func (x *exportAPI) volume(t *testing.T) {
	t.Helper()
	x.must(t, "bdev_malloc_create", `{"name":"Cache","num_blocks":16384,"block_size":512}`)
	x.must(t, "bdev_malloc_create", `{"name":"Core","num_blocks":32768,"block_size":512}`)
	x.must(t, "bdev_ocf_create", `{"name":"Vol","mode":"wt","cache_bdev_name":"Cache","core_bdev_name":"Core"}`)
}

func wantErrno(t *testing.T, err error, code int, data string) {
	t.Helper()
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != code {
		t.Fatalf("error %v, want code %d", err, code)
	}
	if got := fmt.Sprint(je.Data); !strings.Contains(got, data) {
		t.Fatalf("error data %q does not say %q", got, data)
	}
}

// TestPendingExportAtStartup: a start-up nbd_start_disk of a volume that
// waits for its core is pending: not served, not in nbd_get_disks but
// with include_pending, kept in the config; it starts by itself, with
// one INFO line, once the core arrives and the volume starts. A live
// nbd_start_disk of a missing bdev still fails with -19.
func TestPendingExportAtStartup(t *testing.T) {
	x := newExportAPI(t)
	x.must(t, "bdev_malloc_create", `{"name":"Cache","num_blocks":16384,"block_size":512}`)
	x.must(t, "bdev_ocf_create", `{"name":"Vol","mode":"wt","cache_bdev_name":"Cache","core_bdev_name":"Core"}`)

	_, err := x.call(t, t.Context(), "nbd_start_disk", `{"bdev_name":"Vol"}`)
	wantErrno(t, err, -19, "")
	res, err := x.call(t, AtStartup(t.Context()), "nbd_start_disk", `{"bdev_name":"Vol","nbd_device":"nbd:///Vol"}`)
	if err != nil || string(res) != `"nbd:///Vol"` {
		t.Fatalf("start-up nbd_start_disk: %s, %v", res, err)
	}
	if x.served("Vol") || len(x.disks(t, false)) != 0 {
		t.Fatalf("a pending export is served or listed: %v", x.disks(t, false))
	}
	all := x.disks(t, true)
	if len(all) != 1 || all[0].State != "pending" || !strings.Contains(all[0].Pending, `OCF vbdev "Vol" is waiting for its core bdev "Core"`) {
		t.Fatalf("nbd_get_disks include_pending: %+v", all)
	}
	_, err = x.call(t, t.Context(), "nbd_get_disks", `{"nbd_device":"nbd:///Vol"}`)
	wantErrno(t, err, -19, "pending")
	if got := x.configured(t); !slices.Equal(got, []string{"Vol"}) {
		t.Fatalf("config lists %v, want the pending export", got)
	}
	if x.log.count("nbd export pending") != 1 {
		t.Fatalf("no WARN line for the pending export:\n%s", x.log.b.String())
	}

	x.must(t, "bdev_malloc_create", `{"name":"Core","num_blocks":32768,"block_size":512}`)
	waitUntil(t, 5*time.Second, "the pending export starts", func() bool { return x.served("Vol") })
	waitUntil(t, time.Second, "nbd_get_disks lists it", func() bool { return len(x.disks(t, false)) == 1 })
	if d := x.disks(t, true); d[0].State != "started" || d[0].Pending != "" {
		t.Fatalf("started export listed as %+v", d[0])
	}
	if n := x.log.count("nbd export started: its bdev registered"); n != 1 {
		t.Fatalf("%d INFO lines for the start, want 1:\n%s", n, x.log.b.String())
	}
	if got := x.configured(t); !slices.Equal(got, []string{"Vol"}) {
		t.Fatalf("config lists %v once started", got)
	}
}

// TestPendingExportComesBack: the export of a volume whose core is
// hot-removed turns pending (not served, still configured) and starts
// again when the core is back; the export of a bare bdev created after
// start-up too.
func TestPendingExportComesBack(t *testing.T) {
	x := newExportAPI(t)
	x.volume(t)
	x.must(t, "nbd_start_disk", `{"bdev_name":"Vol"}`)
	x.must(t, "bdev_malloc_delete", `{"name":"Core"}`)
	if in, _ := x.svc.OCF.Get("Vol"); in.State != vbdev.StateWaiting {
		t.Fatalf("Vol is %v after its core went, want waiting", in.State)
	}
	if x.served("Vol") || len(x.disks(t, false)) != 0 {
		t.Fatal("the export of a hot-removed volume is still served")
	}
	if all := x.disks(t, true); len(all) != 1 || all[0].Pending != "its bdev was removed" {
		t.Fatalf("nbd_get_disks include_pending: %+v", all)
	}
	if got := x.configured(t); !slices.Equal(got, []string{"Vol"}) {
		t.Fatalf("config lists %v, want the pending export", got)
	}
	x.must(t, "bdev_malloc_create", `{"name":"Core","num_blocks":32768,"block_size":512}`)
	waitUntil(t, 5*time.Second, "the export comes back", func() bool { return x.served("Vol") })

	// Again, and a nbd_stop_disk while pending removes it for good.
	x.must(t, "bdev_malloc_delete", `{"name":"Core"}`)
	x.must(t, "nbd_stop_disk", `{"nbd_device":"nbd:///Vol"}`)
	if len(x.disks(t, true)) != 0 || len(x.configured(t)) != 0 {
		t.Fatalf("a stopped pending export is still listed: %+v", x.disks(t, true))
	}
	x.must(t, "bdev_malloc_create", `{"name":"Core","num_blocks":32768,"block_size":512}`)
	waitUntil(t, 5*time.Second, "Vol starts", func() bool { in, _ := x.svc.OCF.Get("Vol"); return in.Started })
	time.Sleep(50 * time.Millisecond)
	if x.served("Vol") {
		t.Fatal("an export stopped while pending started again")
	}
}

// TestPendingExportDeleteEnds: deleting the exported bdev ends its
// export for good, started (bdev_ocf_delete of the volume, bdev_*_delete
// of a bare bdev) or pending (bdev_ocf_delete of a waiting volume).
func TestPendingExportDeleteEnds(t *testing.T) {
	x := newExportAPI(t)
	x.volume(t)
	x.must(t, "bdev_malloc_create", `{"name":"Bare","num_blocks":2048,"block_size":512}`)
	x.must(t, "nbd_start_disk", `{"bdev_name":"Vol"}`)
	x.must(t, "nbd_start_disk", `{"bdev_name":"Bare"}`)

	x.must(t, "bdev_malloc_delete", `{"name":"Bare"}`)
	x.must(t, "bdev_malloc_delete", `{"name":"Core"}`)
	if all := x.disks(t, true); len(all) != 1 || all[0].BdevName != "Vol" || all[0].State != "pending" {
		t.Fatalf("after deleting Bare and Vol's core: %+v, want Vol pending alone", all)
	}
	x.must(t, "bdev_ocf_delete", `{"name":"Vol"}`)
	if all := x.disks(t, true); len(all) != 0 {
		t.Fatalf("the pending export of a deleted volume is listed: %+v", all)
	}
	if x.log.count("nbd export stopped while pending: its bdev was deleted") != 1 {
		t.Fatalf("no log line for the dropped export:\n%s", x.log.b.String())
	}

	x.must(t, "bdev_malloc_create", `{"name":"Core","num_blocks":32768,"block_size":512}`)
	x.must(t, "bdev_ocf_create", `{"name":"Vol","mode":"wt","cache_bdev_name":"Cache","core_bdev_name":"Core"}`)
	x.must(t, "nbd_start_disk", `{"bdev_name":"Vol"}`)
	x.must(t, "bdev_ocf_delete", `{"name":"Vol"}`)
	if all := x.disks(t, true); len(all) != 0 || x.served("Vol") {
		t.Fatalf("the export of a deleted started volume is listed: %+v", all)
	}
	x.must(t, "bdev_malloc_create", `{"name":"Bare","num_blocks":2048,"block_size":512}`)
	x.must(t, "bdev_ocf_create", `{"name":"Vol","mode":"wt","cache_bdev_name":"Cache","core_bdev_name":"Core"}`)
	time.Sleep(50 * time.Millisecond)
	if x.served("Vol") || x.served("Bare") {
		t.Fatal("an export whose bdev was deleted started again with a new bdev of its name")
	}
}

// TestPendingExportCollision: while an export is pending its name is
// taken: another start of it, at start-up or live, is refused with -16
// naming the pending export, and the first one stays; other bdevs'
// exports start as usual.
func TestPendingExportCollision(t *testing.T) {
	x := newExportAPI(t)
	if _, err := x.call(t, AtStartup(t.Context()), "nbd_start_disk", `{"bdev_name":"Vol"}`); err != nil {
		t.Fatal(err)
	}
	_, err := x.call(t, AtStartup(t.Context()), "nbd_start_disk", `{"bdev_name":"Vol","readonly":true}`)
	wantErrno(t, err, -16, "Vol is already exported as nbd:///Vol, pending (its bdev does not exist yet)")
	x.must(t, "bdev_malloc_create", `{"name":"Cache","num_blocks":16384,"block_size":512}`)
	x.must(t, "bdev_malloc_create", `{"name":"Core","num_blocks":32768,"block_size":512}`)
	x.must(t, "bdev_malloc_create", `{"name":"Other","num_blocks":2048,"block_size":512}`)
	x.must(t, "bdev_ocf_create", `{"name":"Vol","mode":"wt","cache_bdev_name":"Cache","core_bdev_name":"Core"}`)
	waitUntil(t, 5*time.Second, "the pending export starts", func() bool { return x.served("Vol") })
	x.must(t, "bdev_malloc_delete", `{"name":"Core"}`)

	_, err = x.call(t, t.Context(), "nbd_start_disk", `{"bdev_name":"Vol"}`)
	wantErrno(t, err, -16, "Vol is already exported as nbd:///Vol, pending (its bdev was removed): nbd_stop_disk it first")
	if _, err := x.call(t, t.Context(), "nbd_start_disk", `{"bdev_name":"Other"}`); err != nil {
		t.Fatalf("another bdev's export: %v", err)
	}
	all := x.disks(t, true)
	if len(all) != 2 || all[0].BdevName != "Vol" || all[0].State != "pending" || all[1].BdevName != "Other" {
		t.Fatalf("exports %+v, want Vol pending and Other", all)
	}
	if got := x.configured(t); !slices.Equal(got, []string{"Vol", "Other"}) {
		t.Fatalf("config lists %v", got)
	}
}

// TestPendingExportGoneForGood: a bdev removed with its definition is as
// deleted, and so is its export: the volumes of a hot-removed cache (the
// OCF module drops them) and a delay bdev whose base was deleted.
func TestPendingExportGoneForGood(t *testing.T) {
	x := newExportAPI(t)
	x.volume(t)
	x.must(t, "nbd_start_disk", `{"bdev_name":"Vol"}`)
	x.must(t, "bdev_malloc_create", `{"name":"Base","num_blocks":2048,"block_size":512}`)
	x.must(t, "bdev_delay_create", `{"base_bdev_name":"Base","name":"Slow","avg_read_latency":0,"p99_read_latency":0,"avg_write_latency":0,"p99_write_latency":0}`)
	x.must(t, "nbd_start_disk", `{"bdev_name":"Slow"}`)
	if got := x.configured(t); !slices.Equal(got, []string{"Vol", "Slow"}) {
		t.Fatalf("config lists %v", got)
	}

	x.must(t, "bdev_malloc_delete", `{"name":"Cache"}`)
	x.must(t, "bdev_malloc_delete", `{"name":"Base"}`)
	if all := x.disks(t, true); len(all) != 0 || len(x.configured(t)) != 0 {
		t.Fatalf("exports of bdevs gone for good are kept: %+v", all)
	}
	if x.log.count("its OCF vbdev is gone") != 1 || x.log.count("nbd export stopped: its bdev was deleted") != 1 {
		t.Fatalf("the log does not say why each export ended:\n%s", x.log.b.String())
	}
	x.must(t, "bdev_malloc_create", `{"name":"Cache","num_blocks":16384,"block_size":512}`)
	x.must(t, "bdev_ocf_create", `{"name":"Vol","mode":"wt","cache_bdev_name":"Cache","core_bdev_name":"Core"}`)
	time.Sleep(50 * time.Millisecond)
	if x.served("Vol") {
		t.Fatal("the export of a volume dropped with its cache started with a new volume")
	}
}
