package e2e

// The process-death test of durable dirty state (docs/durability.md, "When
// it is written"): random 4 KiB write-back writes over NBD with no flush and
// no FUA, SIGKILL while they run, a restart on the same data directory, and
// a check of every block against what was acknowledged.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/nbd/nbdclient"
)

const (
	noFlushBlocks  = 8192 // the 32 MiB written: half the cache, so nothing is evicted
	noFlushWriters = 16   // requests in flight at once, one goroutine each
	noFlushRun     = 3 * time.Second
)

// noFlushModel is what the writers know of each block: the round of its
// last acknowledged write and the round of a write that was in flight at
// the kill (0: none). Each block belongs to one writer, whose writes to it
// follow one another, so no other value is possible.
type noFlushModel struct {
	acked, inflight [noFlushBlocks]uint32
}

// TestKill9NoFlushKeepsAcknowledgedWrites: a wb volume on file images,
// cleaning off (nop), written at random with 4 KiB writes, never flushed,
// killed with SIGKILL while the writes run. By default every acknowledged
// write reads back after the restart (only a write in flight at the kill
// may be either value, or torn between them at sector granularity), and the
// load reports at least as many dirty lines as blocks written. With
// volatile_dirty_metadata (set with the CLI's cache create
// --volatile-dirty-metadata) the restart loads no dirty line written since
// the last flush, here none: the acknowledged writes are lost, as
// documented, though each block still reads back a value it held.
func TestKill9NoFlushKeepsAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	for _, volatileDirty := range []bool{false, true} {
		name := map[bool]string{false: "default", true: "volatile-dirty-metadata"}[volatileDirty]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			killNoFlush(t, volatileDirty, uint64(time.Now().UnixNano()))
		})
	}
}

func killNoFlush(t *testing.T, volatileDirty bool, seed uint64) {
	t.Logf("seed %d", seed)
	files := sparseFiles(t, map[string]int64{"cache.bin": 64 << 20, "core.bin": 64 << 20})
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dataDir, "config.json", []byte(`{"subsystems":[]}`+"\n"))

	d := crashDaemon(t, dataDir)
	d.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, "cache.bin"), "KCache"))
	d.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, "core.bin"), "KCore"))
	if volatileDirty {
		out, err := exec.Command(binPath, "cache", "create", "KVol", "--cache", "KCache", "--core", "KCore",
			"--mode", "wb", "--volatile-dirty-metadata", "-s", d.Sock).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "KVol" {
			t.Fatalf("blockcache cache create --volatile-dirty-metadata: %v\n%s", err, out)
		}
	} else {
		bad := ocfParams("KVol", "wb", "KCache", "KCore", 0)
		bad["volatile_dirty_metadata"] = "yes"
		d.expectError(t, "bdev_ocf_create", bad, -32602, "Invalid parameters")
		d.Call(t, "bdev_ocf_create", ocfParams("KVol", "wb", "KCache", "KCore", 0))
		// The choice is per cache: another vbdev on it cannot ask for it.
		d.Call(t, "bdev_malloc_create", mallocParams("KCore2", 8, 512))
		other := ocfParams("KVol2", "wb", "KCache", "KCore2", 0)
		other["volatile_dirty_metadata"] = true
		je := d.expectError(t, "bdev_ocf_create", other, -32603, "Could not create OCF vbdev: -22")
		if !strings.Contains(fmt.Sprint(je.Data), "volatile_dirty_metadata is per cache") {
			t.Errorf("bdev_ocf_create asking for volatile dirty metadata on a cache without it: data %q does not say why", je.Data)
		}
		d.Call(t, "bdev_malloc_delete", map[string]any{"name": "KCore2"})
	}
	d.Call(t, "bdev_ocf_set_cleaning", map[string]any{"name": "KVol", "policy": "nop"})
	expectVolatileDirty(t, d, volatileDirty)
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "KVol"})

	m, acked := noFlushWriteUntilKilled(t, d, seed)
	d.Kill(t)

	d = crashDaemon(t, dataDir)
	crashExpectLoaded(t, d, "wb", 1)
	expectVolatileDirty(t, d, volatileDirty)
	loaded := loadedDirtyLines(t, d)
	written := 0
	for _, r := range m.acked {
		if r != 0 {
			written++
		}
	}
	c := d.nbdDial(t, "KVol")
	lost, inflightLanded, torn := noFlushVerify(t, c, m, seed, volatileDirty)
	t.Logf("%d writes acknowledged to %d blocks; after kill -9 and restart: %d dirty lines loaded, %d blocks lost their last acknowledged write, %d writes in flight at the kill landed, %d torn",
		acked, written, loaded, lost, inflightLanded, torn)
	if written < noFlushWriters {
		t.Fatalf("only %d blocks written before the kill: the test proves nothing", written)
	}
	if volatileDirty {
		if lost == 0 {
			t.Fatalf("volatile dirty metadata: every acknowledged write survived a kill with no flush; the documented loss did not show")
		}
		return
	}
	if loaded < written {
		t.Errorf("the restart loaded %d dirty lines, fewer than the %d blocks written", loaded, written)
	}
	d.Stop(t)
}

// expectVolatileDirty checks that bdev_ocf_get_bdevs shows the choice, and
// that the config the daemon saves holds it only when set.
func expectVolatileDirty(t *testing.T, d *Daemon, want bool) {
	t.Helper()
	var vb []struct {
		Name                  string `json:"name"`
		VolatileDirtyMetadata *bool  `json:"volatile_dirty_metadata"`
	}
	d.CallInto(t, "bdev_ocf_get_bdevs", map[string]any{"name": "KVol"}, &vb)
	if len(vb) != 1 || vb[0].VolatileDirtyMetadata == nil || *vb[0].VolatileDirtyMetadata != want {
		t.Fatalf("bdev_ocf_get_bdevs KVol: %+v, want volatile_dirty_metadata %v", vb, want)
	}
	entry := string(d.configEntry(t, "bdev_ocf_create", "name", "KVol"))
	if got := strings.Contains(entry, `"volatile_dirty_metadata":true`); got != want || !want && strings.Contains(entry, "volatile_dirty_metadata") {
		t.Fatalf("saved bdev_ocf_create entry %s: want volatile_dirty_metadata only when set (%v)", entry, want)
	}
}

// loadedDirtyLines returns the dirty lines the "cache loaded" line reports.
func loadedDirtyLines(t *testing.T, d *Daemon) int {
	t.Helper()
	m := regexp.MustCompile(`cache loaded.* dirty_lines=(\d+)`).FindStringSubmatch(d.Stderr())
	if m == nil {
		t.Fatalf("no dirty_lines in the cache loaded line:\n%s", d.Stderr())
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// noFlushWriteUntilKilled runs noFlushWriters goroutines writing stamped
// blocks at random, each over its own blocks, with no flush and no FUA,
// until the daemon, killed after noFlushRun, stops answering.
func noFlushWriteUntilKilled(t *testing.T, d *Daemon, seed uint64) (*noFlushModel, int64) {
	t.Helper()
	c, err := nbdclient.Dial("tcp", d.NBDAddr, nbdclient.Options{Export: "KVol", StructuredReplies: true})
	if err != nil {
		t.Fatalf("nbd connect: %v", err)
	}
	defer c.Close()
	var killed atomic.Bool
	timer := time.AfterFunc(noFlushRun, func() {
		killed.Store(true) // first: the requests may fail before Signal returns
		d.cmd.Process.Signal(syscall.SIGKILL)
	})
	defer timer.Stop()

	m := &noFlushModel{}
	var round atomic.Uint32
	var acked atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, noFlushWriters)
	for g := range noFlushWriters {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			buf := make([]byte, crashBlock)
			for {
				blk := g + noFlushWriters*rng.IntN(noFlushBlocks/noFlushWriters)
				r := round.Add(1)
				crashStamp(buf, seed, uint64(blk), r)
				m.inflight[blk] = r
				if err := c.WriteAt(buf, uint64(blk)*crashBlock, 0); err != nil {
					errs[g] = err
					return
				}
				m.acked[blk], m.inflight[blk] = r, 0
				acked.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(noFlushRun + 30*time.Second):
		t.Fatalf("writers still running %v after the kill was due", 30*time.Second)
	}
	if !killed.Load() {
		t.Fatalf("writes failed before the kill: %v", errs)
	}
	return m, acked.Load()
}

// noFlushVerify reads every block once and checks it against m: by default
// its last acknowledged write, or the write in flight at the kill (whole,
// or sector by sector between the two); with volatileDirty any value the
// block held (crashDecode checks it is a stamp of this block of this run,
// or zeroes). It returns how many blocks lost
// their last acknowledged write, how many hold the write in flight, and how
// many are torn between the two.
func noFlushVerify(t *testing.T, c *nbdclient.Client, m *noFlushModel, seed uint64, volatileDirty bool) (lost, inflightLanded, torn int) {
	t.Helper()
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	var bad []string
	for off := 0; off < noFlushBlocks*crashBlock; off += chunk {
		if err := c.ReadAt(buf, uint64(off)); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		for i := 0; i < chunk; i += crashBlock {
			blk := (off + i) / crashBlock
			b := buf[i : i+crashBlock]
			acked, inflight := m.acked[blk], m.inflight[blk]
			r, err := crashDecode(b, seed, uint64(blk))
			switch {
			case err == nil && r == acked:
			case err == nil && inflight != 0 && r == inflight:
				inflightLanded++
			case err == nil && volatileDirty:
				lost++ // an older value of the block, or the core's zeroes
			case err == nil:
				lost++
				bad = append(bad, fmt.Sprintf("block %d holds round %d; last acknowledged round %d, in flight at the kill %d", blk, r, acked, inflight))
			case inflight != 0 && tornBetween(b, seed, uint64(blk), acked, inflight):
				torn++
			default:
				bad = append(bad, fmt.Sprintf("block %d: %v (last acknowledged round %d, in flight at the kill %d)", blk, err, acked, inflight))
			}
		}
	}
	if len(bad) > 0 {
		n := len(bad)
		if n > 20 {
			bad = append(bad[:20], fmt.Sprintf("... and %d more", n-20))
		}
		t.Fatalf("%d blocks are not what was acknowledged (volatile dirty metadata %v):\n%s", n, volatileDirty, strings.Join(bad, "\n"))
	}
	return lost, inflightLanded, torn
}

// tornBetween reports whether every 512-byte sector of b comes from round
// a or round b of block blk (round 0: zeroes).
func tornBetween(b []byte, seed, blk uint64, ra, rb uint32) bool {
	for s := range crashSectors {
		if r, err := crashSectorRound(b, seed, blk, s); err != nil || r != ra && r != rb {
			return false
		}
	}
	return true
}
