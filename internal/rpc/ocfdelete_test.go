package rpc

import (
	"bytes"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"blockcache/internal/jsonrpc"
	"blockcache/internal/nbd/nbdclient"
)

// serveNBD serves x's NBD server on a unix socket for the test's length
// and returns the socket's path.
func (x *exportAPI) serveNBD(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		x.nbd.Serve(l) //nolint:errcheck // ends when the listener closes
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return sock
}

// nbdRoundTrip connects to export name on sock, checks that the bytes
// at off are want (when set), writes tag there and reads it back.
func nbdRoundTrip(t *testing.T, sock, name string, off uint64, want, tag []byte) {
	t.Helper()
	c, err := nbdclient.Dial("unix", sock, nbdclient.Options{Export: name})
	if err != nil {
		t.Fatalf("connect to export %s: %v", name, err)
	}
	defer c.Disconnect() //nolint:errcheck // the checks are done
	got := make([]byte, len(tag))
	if want != nil {
		if err := c.ReadAt(got, off); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %s at %d over NBD: %v, equal to what was written: %v", name, off, err, bytes.Equal(got, want))
		}
	}
	if err := c.WriteAt(tag, off, 0); err != nil {
		t.Fatalf("write %s at %d over NBD: %v", name, off, err)
	}
	if err := c.ReadAt(got, off); err != nil || !bytes.Equal(got, tag) {
		t.Fatalf("read back %s at %d over NBD: %v, equal: %v", name, off, err, bytes.Equal(got, tag))
	}
}

// wantIOFailure fails unless err is the -32603 reply prefix: -5 of an OCF
// method whose metadata write failed.
func wantIOFailure(t *testing.T, what string, err error, prefix string) {
	t.Helper()
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != jsonrpc.CodeInternalError || je.Message != prefix+": -5" {
		t.Fatalf("%s: %v, want -32603 %q", what, err, prefix+": -5")
	}
}

// TestOCFDeleteFailureKeepsExport: a bdev_ocf_delete whose metadata write
// fails (-32603, -5) leaves the volume's export as it was: the delete
// stops it while it runs (its clients are disconnected), and once the
// volume is back it starts again by itself, listed, configured and
// serving the volume's data. A later delete that succeeds ends it.
func TestOCFDeleteFailureKeepsExport(t *testing.T) {
	x := newExportAPI(t)
	sock := x.serveNBD(t)
	x.must(t, "bdev_malloc_create", `{"name":"Cache","num_blocks":16384,"block_size":512}`)
	x.must(t, "bdev_malloc_create", `{"name":"Core","num_blocks":32768,"block_size":512}`)
	x.must(t, "bdev_error_create", `{"base_name":"Cache"}`)
	x.must(t, "bdev_ocf_create", `{"name":"Vol","mode":"wt","cache_bdev_name":"EE_Cache","core_bdev_name":"Core"}`)
	x.must(t, "nbd_start_disk", `{"bdev_name":"Vol"}`)
	before := bytes.Repeat([]byte("before"), 4096/6+1)[:4096]
	nbdRoundTrip(t, sock, "Vol", 0, nil, before)

	x.must(t, "bdev_error_inject_error", `{"name":"EE_Cache","io_type":"write","error_type":"failure","num":1000}`)
	_, err := x.call(t, t.Context(), "bdev_ocf_delete", `{"name":"Vol"}`)
	wantIOFailure(t, "bdev_ocf_delete with the cache device failing writes", err, "Could not delete OCF vbdev")
	x.must(t, "bdev_error_inject_error", `{"name":"EE_Cache","io_type":"clear","error_type":"failure"}`)

	waitUntil(t, 5*time.Second, "the export starts again", func() bool { return x.served("Vol") })
	if d := x.disks(t, true); len(d) != 1 || d[0].BdevName != "Vol" || d[0].State != "started" {
		t.Fatalf("nbd_get_disks after the failed delete: %+v, want Vol started", d)
	}
	if got := x.configured(t); !slices.Equal(got, []string{"Vol"}) {
		t.Fatalf("config lists %v after the failed delete, want Vol", got)
	}
	nbdRoundTrip(t, sock, "Vol", 0, before, bytes.Repeat([]byte("after!"), 4096/6+1)[:4096])
	if n := x.log.count("nbd export started: its bdev registered"); n != 1 {
		t.Fatalf("%d log lines for the export's restart, want 1:\n%s", n, x.log.b.String())
	}
	if n := x.log.count("nbd export stopped"); n != 0 {
		t.Fatalf("the failed delete logged the export as stopped:\n%s", x.log.b.String())
	}

	x.must(t, "bdev_ocf_delete", `{"name":"Vol"}`)
	if d := x.disks(t, true); len(d) != 0 || x.served("Vol") || len(x.configured(t)) != 0 {
		t.Fatalf("the export of the deleted volume is kept: %+v", d)
	}
	if n := x.log.count("nbd export stopped: its bdev was deleted"); n != 1 {
		t.Fatalf("%d log lines for the export's end, want 1:\n%s", n, x.log.b.String())
	}
	x.must(t, "bdev_ocf_create", `{"name":"Vol","mode":"wt","cache_bdev_name":"EE_Cache","core_bdev_name":"Core"}`)
	time.Sleep(50 * time.Millisecond)
	if x.served("Vol") {
		t.Fatal("the export of a deleted volume started with a new volume of its name")
	}
}

// TestOCFCreateAddCoreFailure: a bdev_ocf_create on a shared cache that
// cannot record the new core (-32603, -5) leaves nothing behind: the core
// bdev is unclaimed, and the same create succeeds once the device works.
func TestOCFCreateAddCoreFailure(t *testing.T) {
	x := newExportAPI(t)
	x.must(t, "bdev_malloc_create", `{"name":"Cache","num_blocks":16384,"block_size":512}`)
	x.must(t, "bdev_malloc_create", `{"name":"Core1","num_blocks":8192,"block_size":512}`)
	x.must(t, "bdev_malloc_create", `{"name":"Core2","num_blocks":8192,"block_size":512}`)
	x.must(t, "bdev_error_create", `{"base_name":"Cache"}`)
	x.must(t, "bdev_ocf_create", `{"name":"V1","mode":"wt","cache_bdev_name":"EE_Cache","core_bdev_name":"Core1"}`)

	x.must(t, "bdev_error_inject_error", `{"name":"EE_Cache","io_type":"write","error_type":"failure","num":1000}`)
	create2 := `{"name":"V2","mode":"wt","cache_bdev_name":"EE_Cache","core_bdev_name":"Core2"}`
	_, err := x.call(t, t.Context(), "bdev_ocf_create", create2)
	wantIOFailure(t, "bdev_ocf_create with the superblock write failing", err, "Could not create OCF vbdev")
	x.must(t, "bdev_error_inject_error", `{"name":"EE_Cache","io_type":"clear","error_type":"failure"}`)
	if owner, claimed := x.svc.Registry.ClaimOwner("Core2"); claimed {
		t.Fatalf("Core2 claimed by %q after the failed create", owner)
	}
	x.must(t, "bdev_ocf_create", create2)
	if in, err := x.svc.OCF.Get("V2"); err != nil || !in.Started {
		t.Fatalf("V2 after the create once the device works: %+v, %v; want started", in, err)
	}
}
