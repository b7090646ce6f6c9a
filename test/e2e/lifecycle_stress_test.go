package e2e

// bdev_ocf_delete racing heavy NBD IO in the real daemon, repeated, with
// the daemon's open file descriptors counted.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"blockcache/internal/nbd/nbdclient"
)

// procFDs lists the daemon's open file descriptors with what they point to.
func (d *Daemon) procFDs(t *testing.T) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("listing the daemon's fds: %v", err)
	}
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out = append(out, e.Name()+" -> "+target)
	}
	return out
}

// waitFDs waits until the daemon has no more fds open than baseline.
func (d *Daemon) waitFDs(t *testing.T, baseline []string, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		fds := d.procFDs(t)
		if len(fds) <= len(baseline) {
			return
		}
		if time.Now().After(deadline) {
			var extra []string
			for _, f := range fds {
				if !slices.Contains(baseline, f) {
					extra = append(extra, f)
				}
			}
			t.Fatalf("%s: the daemon has %d fds open, %d at the start (leak); new ones:\n%s", what, len(fds), len(baseline), strings.Join(extra, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDeleteDuringHeavyIO creates a cached volume on file (aio) bdevs,
// exports it, drives it from several NBD connections with many writers
// (stamped 4 KiB blocks, FUA and flushes), and deletes it with
// bdev_ocf_delete in the middle: the RPC must succeed, every client must
// get errors or a closed connection rather than hang, the core file must
// then hold every acknowledged write, and once the bases are deleted the
// daemon must be back to the file descriptors it had before. Repeated on
// the same files in several modes.
func TestDeleteDuringHeavyIO(t *testing.T) {
	t.Parallel()
	removeUnderNBDIO(t, false)
}

// TestHotRemoveCoreDuringHeavyIO is TestDeleteDuringHeavyIO with the core
// bdev deleted (bdev_aio_delete, a hot-remove) instead: the clients get
// errors, no request handler may panic, the vbdev waits for its core on
// its cache, and re-creating the core bdev brings the volume back by
// itself with every acknowledged write.
func TestHotRemoveCoreDuringHeavyIO(t *testing.T) {
	t.Parallel()
	removeUnderNBDIO(t, true)
}

func removeUnderNBDIO(t *testing.T, hotRemoveCore bool) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	const (
		coreBytes = 16 << 20
		blocks    = coreBytes / crashBlock
		conns     = 3
		perConn   = 4
		writers   = conns * perConn
		perWriter = blocks / writers
	)
	files := sparseFiles(t, map[string]int64{"cache.bin": 8 << 20, "core.bin": coreBytes})
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "spdk_get_version", nil) // the RPC connection is part of the baseline
	baseline := d.procFDs(t)
	coreParams := aioParams(filepath.Join(files, "core.bin"), "DCore")

	acked := make([]uint32, blocks) // last acknowledged value per block
	failed := map[int][]uint32{}    // block -> values of writes that failed
	// check compares an image of the volume with what was acknowledged;
	// what it holds is the acknowledged state from then on.
	check := func(img []byte, what string) {
		t.Helper()
		var bad []string
		for blk := range blocks {
			v, err := crashDecode(img[blk*crashBlock:(blk+1)*crashBlock], seed, uint64(blk))
			switch {
			case err != nil:
				bad = append(bad, fmt.Sprintf("block %d: %v", blk, err))
			case v != acked[blk] && !slices.Contains(failed[blk], v):
				bad = append(bad, fmt.Sprintf("block %d: holds write %#x, last acknowledged %#x (failed: %#x)", blk, v, acked[blk], failed[blk]))
			default:
				acked[blk] = v
			}
		}
		if len(bad) > 0 {
			if len(bad) > 20 {
				bad = append(bad[:20], fmt.Sprintf("... %d more", len(bad)-20))
			}
			t.Fatalf("%s: acknowledged writes missing:\n%s", what, strings.Join(bad, "\n"))
		}
		clear(failed)
	}
	readCore := func(what string) {
		t.Helper()
		core, err := os.ReadFile(filepath.Join(files, "core.bin"))
		if err != nil {
			t.Fatal(err)
		}
		check(core, what)
	}

	modes := []string{"wb", "wt", "wo", "wb"}
	if hotRemoveCore {
		modes = []string{"wb", "wo", "wt"}
	}
	for iter, mode := range modes {
		what := fmt.Sprintf("iteration %d (%s, seed %d)", iter, mode, seed)
		d.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, "cache.bin"), "DCache"))
		d.Call(t, "bdev_aio_create", coreParams)
		d.Call(t, "bdev_ocf_create", ocfParams("DVol", mode, "DCache", "DCore", 0))
		d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "DVol"})

		var (
			mu      sync.Mutex
			ended   []error
			okCount int
			wg      sync.WaitGroup
		)
		clients := make([]*nbdclient.Client, conns)
		for i := range clients {
			c, err := nbdclient.Dial("tcp", d.NBDAddr, nbdclient.Options{Export: "DVol", StructuredReplies: true})
			if err != nil {
				t.Fatalf("%s: nbd connect: %v", what, err)
			}
			clients[i] = c
		}
		if open := d.procFDs(t); len(open) <= len(baseline)+conns {
			t.Fatalf("%s: with two files and %d NBD connections open the daemon has %d fds, %d at the start: the count measures nothing", what, conns, len(open), len(baseline))
		}
		for w := range writers {
			c := clients[w/perConn]
			wseed := rng.Uint64()
			wg.Go(func() {
				r := rand.New(rand.NewPCG(wseed, uint64(w)))
				first := w * perWriter
				val := uint32(iter+1) << 24
				buf := make([]byte, 4*crashBlock)
				ok := 0
				var err error
				for err == nil {
					val++
					n := 1 + r.IntN(4)
					blk := first + r.IntN(perWriter-n+1)
					for b := range n {
						crashStamp(buf[b*crashBlock:(b+1)*crashBlock], seed, uint64(blk+b), val)
					}
					if r.IntN(16) == 0 {
						err = c.Flush()
					} else {
						var flags uint16
						if r.IntN(4) == 0 {
							flags = nbdclient.CmdFlagFUA
						}
						if err = c.WriteAt(buf[:n*crashBlock], uint64(blk)*crashBlock, flags); err == nil {
							for b := range n {
								acked[blk+b] = val
							}
						} else {
							mu.Lock()
							for b := range n {
								failed[blk+b] = append(failed[blk+b], val)
							}
							mu.Unlock()
						}
					}
					if err == nil {
						ok++
					}
				}
				mu.Lock()
				okCount += ok
				ended = append(ended, err)
				mu.Unlock()
			})
		}
		time.Sleep(time.Duration(100+rng.IntN(200)) * time.Millisecond)
		start := time.Now()
		if hotRemoveCore {
			d.Call(t, "bdev_aio_delete", map[string]any{"name": "DCore"})
		} else {
			d.Call(t, "bdev_ocf_delete", map[string]any{"name": "DVol"})
		}
		took := time.Since(start)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: NBD writers neither fail nor end 10 s after the removal returned", what)
		}
		for _, c := range clients {
			c.Close()
		}
		for _, err := range ended {
			var ne *nbdclient.Error
			if !errors.Is(err, nbdclient.ErrClosed) && !errors.As(err, &ne) && !isConnError(err) {
				t.Fatalf("%s: a writer ended with %v, want an NBD error reply or the connection closed", what, err)
			}
		}
		if okCount == 0 {
			t.Fatalf("%s: no request succeeded before the removal", what)
		}
		t.Logf("%s: %d requests succeeded; the removal took %v", what, okCount, took.Round(time.Millisecond))
		if line, found, _ := d.stderr.find("panic"); found {
			t.Fatalf("%s: the daemon recovered from a panic while the volume was removed under IO: %s", what, line)
		}
		expectJSON(t, "nbd_get_disks after the removal", d.Call(t, "nbd_get_disks", nil), "[]")
		if hotRemoveCore {
			if vb := d.ocfBdevs(t, ""); len(vb) != 1 || vb[0].Started || !vb[0].Cache.Attached {
				t.Fatalf("%s: vbdevs after the core's hot-remove: %+v, want DVol waiting on its cache", what, vb)
			}
			d.expectClaimed(t, "DCache", true)
		} else {
			if vb := d.ocfBdevs(t, ""); len(vb) != 0 {
				t.Fatalf("%s: vbdevs after the removal: %+v", what, vb)
			}
			d.expectClaimed(t, "DCache", false)
		}
		if hotRemoveCore {
			if mode == "wt" {
				readCore(what + ": the core file of a write-through cache after its hot-remove")
			}
			// The cache kept the core and its dirty data: the core back,
			// DVol starts again by itself, its pending export too, and
			// has it all.
			d.Call(t, "bdev_aio_create", coreParams)
			if vb := d.ocfBdevs(t, "DVol"); len(vb) != 1 || !vb[0].Started {
				t.Fatalf("%s: DVol once its core is back: %+v, want started", what, vb)
			}
			nbdinfoWorks(t, d.URI("DVol"))
			c := d.nbdDial(t, "DVol")
			img := make([]byte, coreBytes)
			for off := 0; off < coreBytes; off += 1 << 20 {
				if err := c.ReadAt(img[off:off+1<<20], uint64(off)); err != nil {
					t.Fatalf("%s: reading the re-created volume: %v", what, err)
				}
			}
			c.Close()
			check(img, what+": the vbdev re-created after the core's hot-remove")
			d.Call(t, "bdev_ocf_delete", map[string]any{"name": "DVol"})
		}
		d.expectClaimed(t, "DCore", false)
		d.Call(t, "bdev_aio_delete", map[string]any{"name": "DCore"})
		d.Call(t, "bdev_aio_delete", map[string]any{"name": "DCache"})
		readCore(what + ": the core file after bdev_ocf_delete")
		d.waitFDs(t, baseline, what)
	}
	d.Stop(t)
}

// isConnError reports a connection the daemon closed under the client.
func isConnError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe") || strings.Contains(s, "EOF")
}
