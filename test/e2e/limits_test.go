package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"blockcache/internal/jsonrpc"
	"blockcache/internal/ocf"
)

// abuse measures the daemon around fn and prints the ABUSE line the
// closing note quotes.
func abuse(t *testing.T, d *Daemon, name string, fn func()) (rssBefore, rssAfter, hwmAfter int64) {
	t.Helper()
	before := d.usage(t)
	fn()
	after := d.usage(t)
	t.Logf("ABUSE %s rss_before=%d rss_after=%d rss_peak=%d threads_before=%d threads_after=%d",
		name, before.rssKiB<<10, after.rssKiB<<10, after.hwmKiB<<10, before.threads, after.threads)
	return before.rssKiB << 10, after.rssKiB << 10, after.hwmKiB << 10
}

// replyLine sends req on a new connection to the RPC socket and returns the
// first reply line, read with no limit on its length.
func replyLine(t *testing.T, sock string, req []byte) []byte {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go c.Write(req) // the server may stop reading early; the reply comes anyway
	line, err := bufio.NewReaderSize(c, 1<<16).ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading the reply: %v (got %d bytes)", err, len(line))
	}
	return line
}

func TestRPCOversizeRequest(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Bare: true, NBDListen: "none"})
	d.Call(t, "bdev_malloc_create", mallocParams("M0", 8, 512))
	// A 60 MiB bdev name, as in the report that found 760 MB peaks and a
	// 63 MB reply.
	req := []byte(`{"jsonrpc":"2.0","method":"bdev_malloc_create","id":1,"params":{"name":"` +
		strings.Repeat("N", 60<<20) + `","num_blocks":16,"block_size":512}}`)

	before, after, peak := abuse(t, d, "rpc-oversize", func() {
		line := replyLine(t, d.Sock, req)
		if len(line) >= 1024 {
			t.Fatalf("reply to a 60 MiB request is %d bytes: %.200s", len(line), line)
		}
		var r struct{ Error *jsonrpc.Error }
		if err := json.Unmarshal(line, &r); err != nil || r.Error == nil || r.Error.Code != jsonrpc.CodeParseError {
			t.Fatalf("reply %s, want a -32700 error", line)
		}
		if !strings.Contains(r.Error.Data, "request exceeds 4194304 bytes") {
			t.Fatalf("data %q", r.Error.Data)
		}
	})
	if after-before > 64<<20 || peak-before > 96<<20 {
		t.Errorf("one 60 MiB request: RSS %d -> %d bytes, peak %d", before, after, peak)
	}

	// Eight at once (4.3 GB in the report).
	before, after, peak = abuse(t, d, "rpc-oversize-x8", func() {
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if line := replyLine(t, d.Sock, req); len(line) >= 1024 || !strings.Contains(string(line), "-32700") {
					t.Errorf("reply %.200s", line)
				}
			}()
		}
		wg.Wait()
	})
	if after-before > 64<<20 || peak-before > 160<<20 {
		t.Errorf("eight 60 MiB requests: RSS %d -> %d bytes, peak %d", before, after, peak)
	}

	// The daemon stays up and answers; nothing was created.
	var bdevs []bdevInfo
	d.CallInto(t, "bdev_get_bdevs", nil, &bdevs)
	if len(bdevs) != 1 || bdevs[0].Name != "M0" {
		t.Fatalf("bdevs after the oversize requests: %+v", bdevs)
	}
	d.Stop(t)
}

// TestRPCErrorsQuoteExcerpts sends a 1 MiB name or key through every
// error path that quotes one and checks the reply stays short.
func TestRPCErrorsQuoteExcerpts(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Bare: true, NBDListen: "none"})
	big := strings.Repeat("B", 1<<20)
	d.Call(t, "bdev_malloc_create", mallocParams("Base", 4, 512))
	for method, params := range map[string]map[string]any{
		"bdev_get_bdevs":            {"name": big},
		"bdev_malloc_delete":        {"name": big},
		"bdev_null_delete":          {"name": big},
		"bdev_malloc_create":        {"name": big, "num_blocks": 8, "block_size": 1000},
		"bdev_null_create":          {"name": big, "num_blocks": 0, "block_size": 512},
		"bdev_delay_create":         {"base_bdev_name": big, "name": "D", "avg_read_latency": 1, "p99_read_latency": 1, "avg_write_latency": 1, "p99_write_latency": 1},
		"bdev_delay_update_latency": {"delay_bdev_name": big, "latency_type": "avg_read", "latency_us": 1},
		"bdev_error_create":         {"base_name": big},
		"bdev_error_inject_error":   {"name": big, "io_type": "read", "error_type": "failure"},
		"bdev_ocf_create":           {"name": "C", "mode": big, "cache_bdev_name": big, "core_bdev_name": big},
		"bdev_ocf_get_stats":        {"name": big},
		"bdev_ocf_delete":           {"name": big},
		"nbd_start_disk":            {"bdev_name": big},
		"bdev_aio_create":           {"name": "A", "filename": "/nonexistent/" + big},
		"spdk_get_version":          {big: 1},
		big:                         nil,
	} {
		short := method
		if len(short) > 32 {
			short = "long method name"
		}
		t.Run(short, func(t *testing.T) {
			req, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "id": 1, "params": params})
			line := replyLine(t, d.Sock, req)
			if len(line) >= 1024 {
				t.Fatalf("reply of %d bytes: %.300s", len(line), line)
			}
			var r struct{ Error *jsonrpc.Error }
			if err := json.Unmarshal(line, &r); err != nil || r.Error == nil {
				t.Fatalf("want an error reply, got %.300s", line)
			}
		})
	}
	d.Call(t, "bdev_get_bdevs", nil)
	d.Stop(t)
}

func TestSizeLimits(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Bare: true, NBDListen: "none"})

	// 2^55 blocks of 512 bytes is 2^64 bytes, which wrapped to 0.
	je := d.expectError(t, "bdev_malloc_create", map[string]any{"name": "Wrap", "num_blocks": uint64(1) << 55, "block_size": 512}, -22, "Invalid argument")
	if !strings.Contains(je.Data, "overflow") {
		t.Errorf("data %q", je.Data)
	}
	d.expectError(t, "bdev_null_create", map[string]any{"name": "NWrap", "num_blocks": uint64(1) << 55, "block_size": 512}, -22, "Invalid argument")

	// 1 TiB, or twice the machine's memory if it has more.
	size := max(int64(1)<<40, 2*memTotal(t))
	abuse(t, d, "malloc-1TiB", func() {
		je = d.expectError(t, "bdev_malloc_create", map[string]any{"name": "Huge", "num_blocks": size / 512, "block_size": 512}, -12, "Cannot allocate memory")
	})
	for _, s := range []string{fmt.Sprintf("%d bytes requested", size), " available (", "not enough memory"} {
		if !strings.Contains(je.Data, s) {
			t.Errorf("data %q lacks %q", je.Data, s)
		}
	}

	// A delay whose latency overflows a duration.
	d.Call(t, "bdev_malloc_create", mallocParams("DBase", 4, 512))
	je = d.expectError(t, "bdev_delay_create", map[string]any{"base_bdev_name": "DBase", "name": "D0",
		"avg_read_latency": 1, "p99_read_latency": uint64(1) << 63, "avg_write_latency": 1, "p99_write_latency": 1}, -22, "Invalid argument")
	if !strings.Contains(je.Data, "p99_read_latency 9223372036854775808 µs overflows") {
		t.Errorf("data %q", je.Data)
	}

	// A cache whose metadata does not fit: an 8 TiB null bdev with 4 KiB
	// lines (the most lines the engine indexes).
	const cacheBytes = 8<<40 - 1<<30
	need := ocf.MemoryNeeded(cacheBytes, 4<<10)
	if mt := memTotal(t); need <= mt {
		t.Fatalf("this machine has %d bytes of memory, more than the %d an 8 TiB cache needs: the refusal cannot be shown", mt, need)
	}
	d.Call(t, "bdev_null_create", map[string]any{"name": "BigCache", "num_blocks": cacheBytes / 512, "block_size": 512})
	d.Call(t, "bdev_malloc_create", mallocParams("SmallCore", 4, 512))
	abuse(t, d, "ocf-metadata-8TiB", func() {
		je = d.expectError(t, "bdev_ocf_create", ocfParams("Big", "wt", "BigCache", "SmallCore", 4), -32603, "Could not create OCF vbdev: -12")
	})
	if !strings.Contains(je.Data, fmt.Sprintf("memory needed: %d bytes", need)) {
		t.Errorf("data %q lacks the memory needed (%d)", je.Data, need)
	}

	// The daemon is up and holds only what was created.
	var bdevs []bdevInfo
	d.CallInto(t, "bdev_get_bdevs", nil, &bdevs)
	if len(bdevs) != 3 {
		t.Fatalf("bdevs: %+v", bdevs)
	}
	d.Stop(t)
}

// memTotal reads this machine's MemTotal in bytes.
func memTotal(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			n, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n << 10
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}
