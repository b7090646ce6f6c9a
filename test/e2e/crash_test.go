package e2e

// The process crash test of the durability contract (spec/durability.md,
// "How it is tested"): the real daemon, the Go NBD client writing stamped
// blocks with flushes and FUA, SIGKILL at a random moment with writes in
// flight, a restart on the same data directory (the persisted config
// re-creates the vbdev, which loads the cache), and a check of every block.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/testutil"
)

const (
	crashBlock     = 4096
	crashSectors   = crashBlock / testutil.SectorSize
	crashCoreBytes = 32 << 20 // 8192 blocks, four times the cache
	crashBlocks    = crashCoreBytes / crashBlock
	crashPerRound  = 32 // distinct blocks written concurrently per round
	crashKills     = 3  // kills per mode
)

// crashStamp fills b (one block) with block blk's content as written in
// round: each sector stamped with the run's seed, its sector number and the
// round (testutil.Stamp).
func crashStamp(b []byte, seed, blk uint64, round uint32) {
	testutil.Fill(b, testutil.Stamp{Run: seed, Sector: blk * crashSectors, Write: uint64(round)})
}

// crashDecode returns the round a block read back holds: 0 for a block
// never written (all zeroes), else the stamped round; an error when the
// block is not one whole stamped write of this block of this run.
func crashDecode(b []byte, seed, blk uint64) (uint32, error) {
	w, err := testutil.CheckWhole(b, seed, 0, blk*crashSectors)
	return uint32(w), err
}

// crashSectorRound returns the round sector s of block blk holds, or an
// error when it is no whole stamp of that sector of this run.
func crashSectorRound(b []byte, seed, blk uint64, s int) (uint32, error) {
	st, err := testutil.Check(b[s*testutil.SectorSize:], seed, 0, blk*crashSectors+uint64(s))
	return uint32(st.Write), err
}

// crashModel tracks, per block, the last durable round (acknowledged with
// FUA, or acknowledged before a flush that completed) and every later
// round that wrote it (acknowledged or not: a write in flight at the kill
// may or may not have landed).
type crashModel struct {
	durable []uint32
	later   [][]uint32
	// inflight: the round of the write to a block that was in flight at
	// the kill (it failed), the only write that may be found torn.
	inflight map[int]uint32
}

func newCrashModel() *crashModel {
	return &crashModel{durable: make([]uint32, crashBlocks), later: make([][]uint32, crashBlocks), inflight: map[int]uint32{}}
}

func (m *crashModel) issued(blk int, round uint32) { m.later[blk] = append(m.later[blk], round) }

func (m *crashModel) madeDurable(blk int, round uint32) {
	if round > m.durable[blk] {
		m.durable[blk] = round
	}
	m.later[blk] = slices.DeleteFunc(m.later[blk], func(r uint32) bool { return r <= m.durable[blk] })
}

// check says whether round is a value block blk may hold after a crash.
func (m *crashModel) check(blk int, round uint32) error {
	if round == m.durable[blk] || round > m.durable[blk] && slices.Contains(m.later[blk], round) {
		return nil
	}
	if round < m.durable[blk] {
		return fmt.Errorf("holds round %d, older than its durable round %d (later rounds written: %v)", round, m.durable[blk], m.later[blk])
	}
	return fmt.Errorf("holds round %d, which never wrote it (durable round %d, later rounds written: %v)", round, m.durable[blk], m.later[blk])
}

// torn checks a block that is not one whole write. The contract is per
// 512-byte sector: a write in flight at the kill may have reached some of
// its sectors and not others (the daemon's file bdev, built with the
// invariants tag as the e2e tests build it, splits writes on purpose to
// test its resume path). It is accepted when every sector comes from one
// of two rounds: the write in flight at the kill, and a value the block
// may hold (its durable round or a later one). origins says where each
// sector comes from.
func (m *crashModel) torn(b []byte, seed uint64, blk int) (ok bool, origins string) {
	cands := append([]uint32{m.durable[blk]}, m.later[blk]...)
	inflight, hasInflight := m.inflight[blk]
	rounds := map[uint32]bool{}
	known := true
	var parts []string
	for s := range crashSectors {
		from := "unknown"
		if r, err := crashSectorRound(b, seed, uint64(blk), s); err == nil && slices.Contains(cands, r) {
			from = fmt.Sprint("round ", r)
			rounds[r] = true
		}
		known = known && from != "unknown"
		parts = append(parts, fmt.Sprintf("sector %d: %s", s, from))
	}
	origins = fmt.Sprintf("durable round %d, later rounds written %v, in flight at the kill: %v; %s",
		m.durable[blk], m.later[blk], map[bool]string{true: fmt.Sprint("round ", inflight), false: "none"}[hasInflight], strings.Join(parts, ", "))
	ok = known && hasInflight && rounds[inflight] && len(rounds) == 2
	return ok, origins
}

// crashDaemon starts blockcache on dataDir, whose config.json holds the
// volume once the first start created it.
func crashDaemon(t *testing.T, dataDir string) *Daemon {
	t.Helper()
	return StartDaemon(t, DaemonOpts{DataDir: dataDir})
}

// crashBackend is the file bdev module under a crash test's volume: the
// contract must hold whichever path IO takes to the files.
type crashBackend struct {
	name   string // "aio" (system calls) or "uring" (io_uring)
	method string // its create method, taking filename and name
}

var (
	crashAio   = crashBackend{name: "aio", method: "bdev_aio_create"}
	crashUring = crashBackend{name: "uring", method: "bdev_uring_create"}
)

// crashBaseBdevs makes the cache and core bdevs KCache and KCore on the
// files cache.bin and core.bin in dir: the one place the crash test picks
// the IO backend. They are opened direct (O_DIRECT) as by default, which
// it checks: the crash contract is tested without the page cache between
// the daemon and the files.
func crashBaseBdevs(t *testing.T, d *Daemon, backend crashBackend, dir string) {
	t.Helper()
	for name, file := range map[string]string{"KCache": "cache.bin", "KCore": "core.bin"} {
		d.Call(t, backend.method, map[string]any{"filename": filepath.Join(dir, file), "name": name})
		if b, raw := d.getBdev(t, name); strings.Contains(string(b.DriverSpecific), `"buffered"`) {
			t.Fatalf("%s is not direct: %s", name, raw)
		}
	}
}

// TestKill9DuringWrites: for each of wb, wt and wo on direct aio (file)
// bdevs, and wb, the mode whose data most depends on the cache device, on
// uring bdevs (crashBaseBdevs), in a daemon that persists its config, the Go NBD
// client writes rounds of stamped 4 KiB blocks (some FUA), each round
// followed by a flush, while a goroutine sends SIGKILL at a random moment.
// The daemon is restarted on the same data directory (the vbdev comes back
// by loading the cache) and
// every block must read back whole, as its durable round or a later one
// that wrote it: never older, never another block's; only the write in
// flight at the kill may be found torn, at sector granularity (see
// crashModel.torn). Three kills per mode, each continuing on the state the
// previous restart recovered; then a clean restart. The seed replays the
// block and FUA choices and the kill delays, not the timing.
func TestKill9DuringWrites(t *testing.T) {
	t.Parallel()
	baseSeed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BLOCKCACHE_CRASH_SEED"); s != "" {
		fmt.Sscan(s, &baseSeed)
	}
	t.Logf("seed %d (replay the schedule with BLOCKCACHE_CRASH_SEED=%d)", baseSeed, baseSeed)
	for i, c := range []struct {
		backend crashBackend
		mode    string
	}{{crashAio, "wb"}, {crashAio, "wt"}, {crashAio, "wo"}, {crashUring, "wb"}} {
		t.Run(c.backend.name+"/"+c.mode, func(t *testing.T) {
			t.Parallel()
			kill9Mode(t, c.backend, c.mode, baseSeed+uint64(i))
		})
	}
}

func kill9Mode(t *testing.T, backend crashBackend, mode string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x6b696c6c39))
	t.Logf("mode %s: seed %d", mode, seed)
	files := sparseFiles(t, map[string]int64{"cache.bin": 8 << 20, "core.bin": crashCoreBytes})
	dataDir := filepath.Join(t.TempDir(), "data")
	// An empty persisted config: no embedded default, only our volume.
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dataDir, "config.json", []byte(`{"subsystems":[]}`+"\n"))

	d := crashDaemon(t, dataDir)
	crashBaseBdevs(t, d, backend, files)
	d.Call(t, "bdev_ocf_create", ocfParams("KVol", mode, "KCache", "KCore", 0))
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "KVol"})

	m := newCrashModel()
	round := uint32(0)
	for kill := 1; kill <= crashKills; kill++ {
		killAfter := time.Duration(100+rng.IntN(500)) * time.Millisecond
		// The first run relies on flushes alone (FUA writes persist the
		// metadata too, which would hide a flush that does not).
		fuaOneIn := []int{0, 8, 2}[(kill-1)%3]
		var st crashRunStats
		round, st = crashWriteUntilKilled(t, d, m, rng, seed, round, killAfter, fuaOneIn)
		// The killed process is gone, every thread of it, before the
		// restart, as with any real restart.
		d.Kill(t)
		t.Logf("mode %s kill %d after %v: rounds up to %d, %d writes acknowledged (%d FUA), %d flushes, %d writes failed at the kill",
			mode, kill, killAfter, round, st.acked, st.fua, st.flushes, st.failed)
		if st.flushes == 0 {
			t.Logf("mode %s kill %d: no flush completed before the kill", mode, kill)
		}

		d = crashDaemon(t, dataDir)
		crashExpectLoaded(t, d, mode, kill)
		c := d.nbdDial(t, "KVol")
		torn := crashVerify(t, c, m, seed, fmt.Sprintf("mode %s, after kill %d (seed %d)", mode, kill, seed))
		// A torn block is rewritten whole, as a file system's journal
		// replay would.
		if len(torn) > 0 {
			round++
			buf := make([]byte, crashBlock)
			for _, blk := range torn {
				crashStamp(buf, seed, uint64(blk), round)
				if err := c.WriteAt(buf, uint64(blk)*crashBlock, nbdclient.CmdFlagFUA); err != nil {
					t.Fatalf("mode %s after kill %d: rewriting torn block %d: %v", mode, kill, blk, err)
				}
				m.durable[blk] = round
			}
		}
		// What the restart serves is the state from now on; a flush makes
		// it durable.
		if err := c.Flush(); err != nil {
			t.Fatalf("mode %s after kill %d: flush: %v", mode, kill, err)
		}
		c.Close()
	}
	// A clean stop and a last restart keep the same data.
	d.Stop(t)
	d = crashDaemon(t, dataDir)
	crashVerify(t, d.nbdDial(t, "KVol"), m, seed, fmt.Sprintf("mode %s, after a clean restart (seed %d)", mode, seed))
	d.Stop(t)
}

type crashRunStats struct{ acked, fua, flushes, failed int }

// crashWriteUntilKilled writes rounds on the daemon's KVol export until the
// daemon, killed with SIGKILL after killAfter, stops answering. It returns
// the last round used. One write in fuaOneIn has FUA (none if 0).
func crashWriteUntilKilled(t *testing.T, d *Daemon, m *crashModel, rng *rand.Rand, seed uint64, round uint32, killAfter time.Duration, fuaOneIn int) (uint32, crashRunStats) {
	t.Helper()
	c, err := nbdclient.Dial("tcp", d.NBDAddr, nbdclient.Options{Export: "KVol", StructuredReplies: true})
	if err != nil {
		t.Fatalf("nbd connect: %v", err)
	}
	defer c.Close()
	if c.Export.Flags&nbdclient.FlagSendFUA == 0 || c.Export.Flags&nbdclient.FlagSendFlush == 0 {
		t.Fatalf("export flags %#x lack SEND_FLUSH or SEND_FUA", c.Export.Flags)
	}
	killed := make(chan struct{})
	timer := time.AfterFunc(killAfter, func() {
		close(killed) // first: the requests may fail before Signal returns
		d.cmd.Process.Signal(syscall.SIGKILL)
	})
	defer timer.Stop()

	var st crashRunStats
	bufs := make([][]byte, crashPerRound)
	for i := range bufs {
		bufs[i] = make([]byte, crashBlock)
	}
	deadline := time.After(killAfter + 20*time.Second)
	for {
		select {
		case <-deadline:
			t.Fatalf("still writing %v after the kill was due", 20*time.Second)
		default:
		}
		round++
		blocks := make([]int, 0, crashPerRound)
		for len(blocks) < crashPerRound {
			if b := rng.IntN(crashBlocks); !slices.Contains(blocks, b) {
				blocks = append(blocks, b)
			}
		}
		fua := make([]bool, crashPerRound)
		for i, b := range blocks {
			fua[i] = fuaOneIn > 0 && rng.IntN(fuaOneIn) == 0
			crashStamp(bufs[i], seed, uint64(b), round)
			m.issued(b, round)
		}
		errs := make([]error, crashPerRound)
		var wg sync.WaitGroup
		for i, b := range blocks {
			wg.Go(func() {
				var flags uint16
				if fua[i] {
					flags = nbdclient.CmdFlagFUA
				}
				errs[i] = c.WriteAt(bufs[i], uint64(b)*crashBlock, flags)
			})
		}
		wg.Wait()
		failed := false
		for i, b := range blocks {
			switch {
			case errs[i] != nil:
				failed = true
				st.failed++
				m.inflight[b] = round
			case fua[i]:
				st.acked++
				st.fua++
				m.madeDurable(b, round)
			default:
				st.acked++
			}
		}
		if failed {
			crashExpectKilled(t, killed, errs)
			return round, st
		}
		// Read back one block of the round: read-your-writes.
		i := rng.IntN(crashPerRound)
		got := make([]byte, crashBlock)
		if err := c.ReadAt(got, uint64(blocks[i])*crashBlock); err != nil {
			crashExpectKilled(t, killed, []error{err})
			return round, st
		}
		if !bytes.Equal(got, bufs[i]) {
			r, derr := crashDecode(got, seed, uint64(blocks[i]))
			t.Fatalf("block %d read right after round %d wrote it (acknowledged): round %d, %v", blocks[i], round, r, derr)
		}
		if err := c.Flush(); err != nil {
			crashExpectKilled(t, killed, []error{err})
			return round, st
		}
		st.flushes++
		for _, b := range blocks {
			m.madeDurable(b, round)
		}
	}
}

// crashExpectKilled checks that requests failed because of the kill.
func crashExpectKilled(t *testing.T, killed <-chan struct{}, errs []error) {
	t.Helper()
	select {
	case <-killed:
	default:
		t.Fatalf("requests failed before the daemon was killed: %v", errs)
	}
}

// crashExpectLoaded checks that the restarted daemon loaded the cache
// after the unclean stop (contract 3: never an empty cache started over a
// core that may lack its dirty data) and started the volume.
func crashExpectLoaded(t *testing.T, d *Daemon, mode string, kill int) {
	t.Helper()
	loaded := false
	for _, line := range strings.Split(d.Stderr(), "\n") {
		if strings.Contains(line, "cache loaded") {
			loaded = true
			if !strings.Contains(line, "clean_shutdown=false") {
				t.Errorf("mode %s kill %d: load after SIGKILL does not say clean_shutdown=false: %s", mode, kill, line)
			}
		}
		if strings.Contains(line, "cache started") {
			t.Fatalf("mode %s kill %d: the restart initialised the cache instead of loading it: %s", mode, kill, line)
		}
	}
	if !loaded {
		t.Fatalf("mode %s kill %d: the restart did not load the cache:\n%s", mode, kill, d.Stderr())
	}
	vb := d.ocfBdevs(t, "KVol")
	if len(vb) != 1 || !vb[0].Started {
		t.Fatalf("mode %s kill %d: KVol after restart: %+v", mode, kill, vb)
	}
}

// crashVerify reads every block and checks it against the model; then the
// values read become the durable ones. It returns the blocks found torn
// (see crashModel.torn), which the caller rewrites.
func crashVerify(t *testing.T, c *nbdclient.Client, m *crashModel, seed uint64, what string) (torn []int) {
	t.Helper()
	if c.Export.Size != crashCoreBytes {
		t.Fatalf("%s: export size %d, want %d", what, c.Export.Size, crashCoreBytes)
	}
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	var bad []string
	rounds := make([]uint32, crashBlocks)
	nonzero := 0
	for off := 0; off < crashCoreBytes; off += chunk {
		if err := c.ReadAt(buf, uint64(off)); err != nil {
			t.Fatalf("%s: read at %d: %v", what, off, err)
		}
		for i := 0; i < chunk; i += crashBlock {
			blk := (off + i) / crashBlock
			r, err := crashDecode(buf[i:i+crashBlock], seed, uint64(blk))
			if err == nil {
				err = m.check(blk, r)
			} else {
				ok, origins := m.torn(buf[i:i+crashBlock], seed, blk)
				if ok {
					torn = append(torn, blk)
					t.Logf("%s: block %d: a write in flight at the kill is torn at sector granularity: %s", what, blk, origins)
					continue
				}
				err = fmt.Errorf("%w; %s", err, origins)
			}
			if err != nil {
				bad = append(bad, fmt.Sprintf("block %d: %v", blk, err))
				continue
			}
			rounds[blk] = r
			if r != 0 {
				nonzero++
			}
		}
	}
	if len(bad) > 0 {
		if len(bad) > 20 {
			bad = append(bad[:20], fmt.Sprintf("... and %d more", len(bad)-20))
		}
		t.Fatalf("%s: %d blocks violate the durability contract:\n%s", what, len(bad), strings.Join(bad, "\n"))
	}
	// It must read the same again.
	for off := 0; off < crashCoreBytes; off += chunk {
		if err := c.ReadAt(buf, uint64(off)); err != nil {
			t.Fatalf("%s: second read at %d: %v", what, off, err)
		}
		for i := 0; i < chunk; i += crashBlock {
			blk := (off + i) / crashBlock
			if slices.Contains(torn, blk) {
				continue
			}
			if r, err := crashDecode(buf[i:i+crashBlock], seed, uint64(blk)); err != nil || r != rounds[blk] {
				t.Fatalf("%s: block %d read round %d, then %d (%v)", what, blk, rounds[blk], r, err)
			}
		}
	}
	for blk, r := range rounds {
		m.durable[blk], m.later[blk] = r, nil
	}
	clear(m.inflight)
	t.Logf("%s: all %d blocks valid, %d written, %d torn in-flight writes", what, crashBlocks, nonzero, len(torn))
	return torn
}
