package ocf_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
	"blockcache/internal/testutil"
)

// TestConcurrentStamps runs many goroutines reading and writing overlapping
// ranges of two cores that share a cache far smaller than they are, while
// another goroutine changes the mode, cleans and checks the metadata. Every
// sector written carries a stamp (core, sector, writer, sequence number), and
// every sector read is checked against what the writes could have left there
// (see stampChecker). At the end the volumes, and after a flush the core
// devices, must hold for each sector a write that no other write completely
// followed.
func TestConcurrentStamps(t *testing.T) {
	for _, ls := range []int64{4 << 10, 64 << 10} {
		t.Run(fmt.Sprintf("%dK", ls>>10), func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			runStamps(t, ls, seed, nil)
		})
	}
}

// TestConcurrentStampsSlowCore is TestConcurrentStamps over cores whose
// reads and writes sleep, so that hits, misses and their fills run while
// writes wait for the core with their stripes' RW locks let go (io.go,
// writeCore), and writes of one range queue up behind each other and
// absorb each other (absorb.go).
func TestConcurrentStampsSlowCore(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	if n := runStamps(t, 4<<10, seed, func(_ int, d bdev.Device) bdev.Device { return sleepyDevice{d} }); n == 0 && !t.Failed() {
		t.Error("no write was absorbed: the model never checked absorption")
	}
}

// sleepyDevice sleeps before each read and write.
type sleepyDevice struct{ bdev.Device }

func (d sleepyDevice) ReadAt(p []byte, off int64) error {
	time.Sleep(20 * time.Microsecond)
	return d.Device.ReadAt(p, off)
}

func (d sleepyDevice) WriteAt(p []byte, off int64, fua bool) error {
	time.Sleep(50 * time.Microsecond)
	return d.Device.WriteAt(p, off, fua)
}

const (
	stampWorkers = 16
	stampCores   = 2
)

// stampChecker tracks writes with a logical clock. A write takes a tick when
// it starts (its sequence number, stamped into its data) and one when it
// returns. For each sector it keeps the highest start tick among the writes
// to it that have returned.
//
// A read of a sector may return the initial zeroes only if no write to the
// sector had returned before the read started, and otherwise a stamp of a
// write to that very sector that started before the read returned and that
// is not superseded: had write v returned before some write w started, and w
// returned before the read started, v is stale. (Sequence numbers alone
// cannot order overlapping concurrent writes: the one that started later may
// be the one applied first.)
type stampChecker struct {
	t      *testing.T
	clock  atomic.Uint64
	end    []atomic.Uint64 // by sequence number: the tick at which the write returned
	writer []atomic.Uint32 // by sequence number: the writer's id + 1
	// maxDone[core][sector]: the highest start tick of a returned write.
	maxDone [stampCores][]atomic.Uint64
	fails   atomic.Int32
}

func newStampChecker(t *testing.T, maxWrites int, sectors int64) *stampChecker {
	s := &stampChecker{t: t, end: make([]atomic.Uint64, 2*maxWrites+2), writer: make([]atomic.Uint32, 2*maxWrites+2)}
	for i := range s.maxDone {
		s.maxDone[i] = make([]atomic.Uint64, sectors)
	}
	return s
}

func (s *stampChecker) errorf(format string, args ...any) {
	if s.fails.Add(1) <= 10 {
		s.t.Errorf(format, args...)
	}
}

// stampSector fills one 512-byte sector for write seq by writer of core.
func stampSector(p []byte, core int, sector int64, writer int, seq uint64) {
	testutil.Stamp{Space: uint32(core), Sector: uint64(sector), Write: seq, Writer: uint32(writer)}.Put(p)
}

// write writes a stamped range and records it.
func (s *stampChecker) write(co *ocf.Core, core, writer int, off int64, n int, fua bool, buf []byte) {
	seq := s.clock.Add(1)
	s.writer[seq].Store(uint32(writer) + 1)
	p := buf[:n]
	for i := 0; i < n; i += sectorBytes {
		stampSector(p[i:i+sectorBytes], core, off/sectorBytes+int64(i/sectorBytes), writer, seq)
	}
	if err := co.WriteAt(p, off, fua); err != nil {
		s.errorf("write core %d at %d len %d: %v", core, off, n, err)
		return
	}
	s.end[seq].Store(s.clock.Add(1))
	for sec := off / sectorBytes; sec < (off+int64(n))/sectorBytes; sec++ {
		m := &s.maxDone[core][sec]
		for {
			old := m.Load()
			if old >= seq || m.CompareAndSwap(old, seq) {
				break
			}
		}
	}
}

// read reads a range and checks every sector.
func (s *stampChecker) read(co *ocf.Core, core int, off int64, n int, buf []byte, lb []uint64) {
	first := off / sectorBytes
	lb = lb[:n/sectorBytes]
	for i := range lb {
		lb[i] = s.maxDone[core][first+int64(i)].Load()
	}
	p := buf[:n]
	if err := co.ReadAt(p, off); err != nil {
		s.errorf("read core %d at %d len %d: %v", core, off, n, err)
		return
	}
	hi := s.clock.Load()
	for i := range lb {
		s.checkSector(p[i*sectorBytes:(i+1)*sectorBytes], core, first+int64(i), lb[i], hi, fmt.Sprintf("read core %d at %d len %d (mode %s)", core, off, n, co.Cache().Mode()))
	}
}

// checkSector checks one sector read: lb is the highest start tick of a write
// to it that returned before the read started, hi the clock when the read
// returned.
func (s *stampChecker) checkSector(p []byte, core int, sector int64, lb, hi uint64, what string) {
	st, err := testutil.Check(p, 0, uint32(core), uint64(sector))
	if err == nil && st.Write == 0 {
		if lb != 0 {
			s.errorf("%s: sector %d reads zeroes, but write %d to it had completed before the read started", what, sector, lb)
		}
		return
	}
	seq, writer := st.Write, st.Writer
	switch {
	case err != nil:
		s.errorf("%s: sector %d holds no valid stamp of this core and sector (%v): torn, misplaced or foreign data", what, sector, err)
	case seq > hi:
		s.errorf("%s: sector %d holds write %d, which had not started when the read returned (clock %d)", what, sector, seq, hi)
	case s.writer[seq].Load() != writer+1:
		s.errorf("%s: sector %d holds write %d stamped by writer %d, but that write was writer %d's", what, sector, seq, writer, int(s.writer[seq].Load())-1)
	default:
		if end := s.end[seq].Load(); end != 0 && end < lb {
			s.errorf("%s: sector %d holds stale write %d (returned at tick %d); write %d started after that and returned before the read started", what, sector, seq, end, lb)
		}
	}
}

// runStamps runs the stamp test with lines of ls bytes, the cores wrapped
// by wrapCore unless it is nil, and returns how many writes were absorbed.
func runStamps(t *testing.T, ls int64, seed uint64, wrapCore func(int, bdev.Device) bdev.Device) (absorbed uint64) {
	coreLines, cacheLines := int64(64), 8
	opsPerWorker := 2000
	if ls >= 64<<10 {
		coreLines, cacheLines = 16, 4
		opsPerWorker = 1000
	}
	if wrapCore != nil {
		opsPerWorker /= 4 // slow cores: fewer requests, each overlapping more
	}
	coreBytes := coreLines * ls
	sectors := coreBytes / sectorBytes
	maxSectors := min(2*ls/sectorBytes, 64) // up to 2 lines (4K) or half a line (64K) a request
	env := ocftest.New(t, ocftest.Options{Lines: cacheLines, LineSize: ls, Mode: ocf.ModeWB, Cores: stampCores, CoreBytes: coreBytes, WrapCore: wrapCore})
	c := env.Cache
	chk := newStampChecker(t, stampWorkers*opsPerWorker, sectors)

	var workers sync.WaitGroup
	done := make(chan struct{})
	for w := range stampWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			buf := make([]byte, maxSectors*sectorBytes)
			lb := make([]uint64, maxSectors)
			for range opsPerWorker {
				core := r.IntN(stampCores)
				co := env.Cores[core]
				n := 1 + r.Int64N(maxSectors)
				var start int64
				switch r.IntN(5) {
				case 4: // one of two fixed ranges: writes of exactly one range, which may absorb each other (absorb.go)
					n = min(8, maxSectors)
					start = int64(r.IntN(2)) * n
				case 0, 1: // a hot region of a few lines: heavy overlap
					start = r.Int64N(min(sectors, 3*ls/sectorBytes) - n + 1)
				case 2: // line-aligned
					start = min(r.Int64N(coreLines)*ls/sectorBytes, sectors-n)
				default:
					start = r.Int64N(sectors - n + 1)
				}
				off, size := start*sectorBytes, int(n*sectorBytes)
				switch op := r.IntN(100); {
				case op < 47:
					chk.read(co, core, off, size, buf, lb)
				case op < 95:
					chk.write(co, core, w, off, size, op < 59, buf)
				default:
					if err := co.Flush(); err != nil {
						chk.errorf("flush: %v", err)
					}
				}
			}
		}()
	}

	var mgmt sync.WaitGroup
	mgmt.Add(1)
	go func() {
		defer mgmt.Done()
		r := rand.New(rand.NewPCG(seed, 1<<32))
		modes := ocf.Modes()
		next := 0
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Duration(r.IntN(3000)) * time.Microsecond):
			}
			switch r.IntN(4) {
			case 0, 1:
				next = (next + 1) % len(modes)
				if err := c.SetMode(modes[next], r.IntN(2) == 0); err != nil {
					chk.errorf("set mode %s: %v", modes[next], err)
				}
			case 2:
				var co *ocf.Core
				if i := r.IntN(stampCores + 1); i < stampCores {
					co = env.Cores[i]
				}
				if err := c.FlushDirty(co, nil); err != nil {
					chk.errorf("flush dirty: %v", err)
				}
			default:
				if errs := c.Check(); len(errs) > 0 {
					chk.errorf("check while running: %v", errs)
				}
			}
		}
	}()
	workers.Wait()
	close(done)
	mgmt.Wait()
	if t.Failed() {
		return 0
	}

	// Serialised final check: every sector holds a write that no other
	// write to it completely followed (or zeroes if never written).
	final := make([][]byte, stampCores)
	end := chk.clock.Load()
	for core, co := range env.Cores {
		final[core] = volRead(t, co, 0, int(coreBytes))
		for sec := range sectors {
			m := chk.maxDone[core][sec].Load()
			p := final[core][sec*sectorBytes : (sec+1)*sectorBytes]
			// Every write has returned: lb for "not superseded" is the
			// latest start among them.
			chk.checkSector(p, core, sec, m, end, fmt.Sprintf("final read of core %d", core))
			if st, err := testutil.Read(p); err == nil && m != 0 && st.Write != m && chk.end[st.Write].Load() < m {
				chk.errorf("final read of core %d: sector %d holds write %d, superseded by write %d", core, sec, st.Write, m)
			}
		}
	}
	if err := c.FlushDirty(nil, nil); err != nil {
		t.Fatalf("final flush: %v", err)
	}
	if u := c.Stats().Usage; u.Dirty != 0 {
		t.Errorf("dirty %d after final flush", u.Dirty)
	}
	for core := range env.Cores {
		expectBytes(t, fmt.Sprintf("core %d device after final flush", core), devRead(t, env.CoreDevs[core], 0, int(coreBytes)), final[core])
		expectBytes(t, fmt.Sprintf("core %d volume after final flush", core), volRead(t, env.Cores[core], 0, int(coreBytes)), final[core])
	}
	if errs := c.Check(); len(errs) > 0 {
		t.Errorf("final check: %v", errs)
	}
	s := c.Stats()
	t.Logf("mode %s; requests %+v; usage %+v; %d writes absorbed", c.Mode(), s.Requests, s.Usage, c.AbsorbedWrites())
	if s.Requests.Serviced == 0 || s.Requests.RdHits == 0 {
		t.Errorf("the run never used the cache: %+v", s.Requests)
	}
	return c.AbsorbedWrites()
}
