package vbdev_test

// Stress tests of the vbdev lifecycle under IO: a delete or a hot-remove
// racing many IO goroutines (TestDeleteDuringHeavyIO,
// TestHotRemoveDuringHeavyIO), random interleavings of create, delete,
// hot-remove and re-registration of bases with IO checked against a model
// (TestRandomLifecycle), and deterministic reproductions of what they
// found (TestExamineKeepsRecordedLineSize, TestFlushRacingCoreHotRemove).

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
	"blockcache/internal/testutil"
	"blockcache/internal/vbdev"
)

// testSeed returns the seed from the environment variable env, or a fresh
// one, and logs how to replay it.
func testSeed(t *testing.T, env string) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(env); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("%s=%q: %v", env, s, err)
		}
	}
	t.Logf("seed %d (replay with %s=%d)", seed, env, seed)
	return seed
}

// waitGoroutines waits until no more goroutines run than at baseline,
// failing with every goroutine's stack if they do not go within 5 s.
func waitGoroutines(t *testing.T, baseline int, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%s: %d goroutines still run, %d at the start (leak):\n%s", what, n, baseline, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cleanIOError reports whether err is how IO on a deleted or removed
// volume may fail.
func cleanIOError(err error) bool {
	return errors.Is(err, ocf.ErrStopped) || errors.Is(err, bdev.ErrClosed) || errors.Is(err, bdev.ErrNoSuchDevice)
}

// Sector stamps (testutil.Stamp): every 512-byte sector says which
// sector of the volume it is and which write (value) wrote it, so any
// sector read back is checked whole and in place.
const (
	hioBlock   = 4096
	hioSectors = hioBlock / bdev.SectorSize
)

// hioStamp fills b (whole blocks starting at block blk) with value val.
func hioStamp(b []byte, blk, val uint64) {
	testutil.Fill(b, testutil.Stamp{Sector: blk * hioSectors, Write: val})
}

// hioSector decodes one sector read back as sector in of block blk: its
// value (0 for a sector never written), or an error if it is not a whole
// stamped sector of that place.
func hioSector(sec []byte, blk uint64, in int) (uint64, error) {
	st, err := testutil.Check(sec, 0, 0, blk*hioSectors+uint64(in))
	if err != nil {
		return 0, fmt.Errorf("block %d sector %d: %w", blk, in, err)
	}
	return st.Write, nil
}

// TestDeleteDuringHeavyIO deletes a volume, in every cache mode, while
// writers (with FUA and flushes), readers and management calls
// (Stats, FlushStart, List) hammer it: Delete must complete, every IO
// must succeed or fail with a clean error, nothing may hang, the core
// device must then hold every acknowledged write, the bases must be
// released, and the goroutines must go back to what ran before. The
// same volume is re-created and deleted again several times.
func TestDeleteDuringHeavyIO(t *testing.T) {
	seed := testSeed(t, "BLOCKCACHE_STRESS_SEED")
	for i, mode := range []string{"wb", "wt", "wo", "wa", "wi", "pt"} {
		t.Run(mode, func(t *testing.T) { removeDuringHeavyIO(t, mode, seed+uint64(i), byDelete) })
	}
}

// TestHotRemoveDuringHeavyIO is TestDeleteDuringHeavyIO with the core or
// the cache bdev unregistered (hot-removed) instead: the volume goes, IO
// fails cleanly, and once the base is registered again the volume comes
// back (by itself for a core, its vbdev having waited on its cache; by
// examine for a cache) with every acknowledged write, dirty data included.
func TestHotRemoveDuringHeavyIO(t *testing.T) {
	seed := testSeed(t, "BLOCKCACHE_STRESS_SEED")
	for i, mode := range []string{"wb", "wt", "wo"} {
		t.Run("core/"+mode, func(t *testing.T) { removeDuringHeavyIO(t, mode, seed+uint64(i), byCoreRemoval) })
		t.Run("cache/"+mode, func(t *testing.T) { removeDuringHeavyIO(t, mode, seed+uint64(i), byCacheRemoval) })
	}
}

type removal int

const (
	byDelete removal = iota
	byCoreRemoval
	byCacheRemoval
)

func (r removal) String() string {
	return [...]string{"Delete", "hot-remove of the core", "hot-remove of the cache"}[r]
}

// heavyIOModel is what the IO goroutines had acknowledged: per block the
// last acknowledged value and the values of writes that failed (which may
// or may not have landed).
type heavyIOModel struct {
	acked  []uint64
	failed map[uint64][]uint64
}

// check compares an image of the whole volume with the model, and makes
// what it holds the acknowledged state from now on.
func (m *heavyIOModel) check(t *testing.T, img []byte, what string) {
	t.Helper()
	var bad []string
	for blk := range uint64(len(m.acked)) {
		for s := range hioSectors {
			off := (int(blk)*hioSectors + s) * bdev.SectorSize
			v, err := hioSector(img[off:off+bdev.SectorSize], blk, s)
			switch {
			case err != nil:
				bad = append(bad, err.Error())
			case v != m.acked[blk] && !slices.Contains(m.failed[blk], v):
				bad = append(bad, fmt.Sprintf("block %d sector %d holds value %d, last acknowledged %d (failed writes %v)", blk, s, v, m.acked[blk], m.failed[blk]))
			}
		}
	}
	if len(bad) > 0 {
		if len(bad) > 20 {
			bad = append(bad[:20], fmt.Sprintf("... %d more", len(bad)-20))
		}
		t.Fatalf("%s: acknowledged writes missing:\n%s", what, strings.Join(bad, "\n"))
	}
	for blk := range m.acked {
		// A failed write that landed counts from now on.
		m.acked[blk], _ = hioSector(img[blk*hioBlock:], uint64(blk), 0)
	}
	clear(m.failed)
}

func removeDuringHeavyIO(t *testing.T, mode string, seed uint64, how removal) {
	const (
		coreMiB   = 8
		blocks    = coreMiB << 20 / hioBlock
		writers   = 8
		perWriter = blocks / writers
		readers   = 4
	)
	iterations := 3 // deletes and re-creates
	if how != byDelete {
		iterations = 2
	}
	baseline := runtime.NumGoroutine()
	rng := rand.New(rand.NewPCG(seed, 1))
	e := newEnv(t)
	cacheDev := e.malloc("Cache", 4)
	core := e.malloc("Core", coreMiB)
	model := &heavyIOModel{acked: make([]uint64, blocks), failed: map[uint64][]uint64{}}
	acked := model.acked
	readAll := func(d bdev.Device) []byte {
		t.Helper()
		img := make([]byte, coreMiB<<20)
		if err := d.ReadAt(img, 0); err != nil {
			t.Fatal(err)
		}
		return img
	}
	for iter := range iterations {
		what := fmt.Sprintf("mode %s iteration %d, %v under IO (seed %d)", mode, iter, how, seed)
		e.create("Vol", mode, "Cache", "Core")
		vol, err := e.reg.Lookup("Vol")
		if err != nil {
			t.Fatal(err)
		}
		var (
			mu      sync.Mutex
			bad     []string
			okIO    int
			stopAux = make(chan struct{})
			wg, aux sync.WaitGroup
		)
		report := func(format string, args ...any) {
			mu.Lock()
			bad = append(bad, fmt.Sprintf(format, args...))
			mu.Unlock()
		}
		// A panic in an IO goroutine fails this test, not the binary.
		guard := func(who string) {
			if p := recover(); p != nil {
				report("%s: %s panicked: %v\n%s", what, who, p, debug.Stack())
			}
		}
		for w := range writers {
			wseed := rng.Uint64()
			wg.Go(func() {
				defer guard(fmt.Sprintf("writer %d", w))
				r := rand.New(rand.NewPCG(wseed, uint64(w)))
				first := uint64(w * perWriter)
				val := uint64(iter)<<40 | uint64(w)<<32
				buf := make([]byte, 8*hioBlock)
				ok := 0
				defer func() {
					mu.Lock()
					okIO += ok
					mu.Unlock()
				}()
				for {
					val++
					n := 1 + r.IntN(8)
					blk := first + uint64(r.IntN(perWriter-n+1))
					p := buf[:n*hioBlock]
					hioStamp(p, blk, val)
					var err error
					switch op := r.IntN(16); {
					case op == 0:
						err = vol.Flush()
					case op < 3: // read back this writer's own blocks
						got := make([]byte, len(p))
						if err = vol.ReadAt(got, int64(blk)*hioBlock); err == nil {
							for b := range n {
								for s := range hioSectors {
									off := (b*hioSectors + s) * bdev.SectorSize
									v, derr := hioSector(got[off:off+bdev.SectorSize], blk+uint64(b), s)
									if derr == nil && v != acked[blk+uint64(b)] {
										derr = fmt.Errorf("block %d sector %d reads value %d, last acknowledged %d", blk+uint64(b), s, v, acked[blk+uint64(b)])
									}
									if derr != nil {
										report("%s: writer %d read-back: %v", what, w, derr)
										return
									}
								}
							}
						}
					default:
						err = vol.WriteAt(p, int64(blk)*hioBlock, op < 6)
						if err == nil {
							for b := range uint64(n) {
								acked[blk+b] = val
							}
						} else {
							mu.Lock()
							for b := range uint64(n) {
								model.failed[blk+b] = append(model.failed[blk+b], val)
							}
							mu.Unlock()
						}
					}
					if err != nil {
						if !cleanIOError(err) {
							report("%s: writer %d: IO failed with an unexpected error: %v", what, w, err)
						}
						return
					}
					ok++
				}
			})
		}
		for rd := range readers {
			rseed := rng.Uint64()
			wg.Go(func() {
				defer guard(fmt.Sprintf("reader %d", rd))
				r := rand.New(rand.NewPCG(rseed, uint64(100+rd)))
				buf := make([]byte, 16*hioBlock)
				for {
					blk := uint64(r.IntN(blocks - 16 + 1))
					if err := vol.ReadAt(buf, int64(blk)*hioBlock); err != nil {
						if !cleanIOError(err) {
							report("%s: reader %d: unexpected error: %v", what, rd, err)
						}
						return
					}
					for s := range len(buf) / bdev.SectorSize {
						if _, err := hioSector(buf[s*bdev.SectorSize:(s+1)*bdev.SectorSize], blk+uint64(s/hioSectors), s%hioSectors); err != nil {
							report("%s: reader %d: %v", what, rd, err)
							return
						}
					}
				}
			})
		}
		// Management calls racing the removal.
		aux.Go(func() {
			defer guard("management caller")
			for {
				select {
				case <-stopAux:
					return
				default:
				}
				_, serr := e.m.Stats("Vol")
				ferr := e.m.FlushStart("Vol", false)
				e.m.List("")
				for _, err := range []error{serr, ferr} {
					if err != nil && !errors.Is(err, vbdev.ErrNoSuchVbdev) && !errors.Is(err, vbdev.ErrNotStarted) {
						report("%s: management call during the removal: %v", what, err)
						return
					}
				}
				time.Sleep(time.Millisecond)
			}
		})

		time.Sleep(time.Duration(20+rng.IntN(60)) * time.Millisecond)
		remErr := make(chan error, 1)
		start := time.Now()
		go func() {
			var err error
			switch how {
			case byDelete:
				err = e.m.Delete("Vol")
			case byCoreRemoval:
				_, err = e.reg.Unregister("Core")
			case byCacheRemoval:
				_, err = e.reg.Unregister("Cache")
			}
			remErr <- err
		}()
		// Generous: under -race a write-back racing eight writers takes
		// seconds (it chases the lines they keep dirtying).
		select {
		case err := <-remErr:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: hangs (60 s)", what)
		}
		took := time.Since(start)
		close(stopAux)
		ioDone := make(chan struct{})
		go func() { wg.Wait(); aux.Wait(); close(ioDone) }()
		select {
		case <-ioDone:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("%s: IO goroutines still running 10 s after the removal returned:\n%s", what, buf[:runtime.Stack(buf, true)])
		}
		if len(bad) > 0 {
			t.Fatalf("%s:\n%s", what, strings.Join(bad, "\n"))
		}
		if okIO == 0 {
			t.Fatalf("%s: no IO succeeded before the removal", what)
		}
		t.Logf("%s: %d IOs succeeded, the removal took %v", what, okIO, took.Round(time.Millisecond))
		if _, err := e.reg.Lookup("Vol"); err == nil {
			t.Fatalf("%s: volume still registered", what)
		}
		if how == byCoreRemoval {
			// Vol waits for its core on its cache, which stays claimed.
			if l := e.m.List(""); len(l) != 1 || l[0].State != vbdev.StateWaiting || !l[0].CoreRemoved {
				t.Fatalf("%s: vbdevs: %+v, want Vol waiting for its removed core", what, l)
			}
			if owner, claimed := e.reg.ClaimOwner("Cache"); !claimed || owner != "bdev_ocf" {
				t.Fatalf("%s: Cache claimed=%v by %q while Vol waits on it", what, claimed, owner)
			}
		} else {
			if l := e.m.List(""); len(l) != 0 {
				t.Fatalf("%s: vbdevs left: %+v", what, l)
			}
			for _, base := range []string{"Cache", "Core"} {
				if owner, claimed := e.reg.ClaimOwner(base); claimed {
					t.Fatalf("%s: %s still claimed by %q", what, base, owner)
				}
			}
		}

		switch how {
		case byDelete:
			model.check(t, readAll(core), what+": core device after Delete")
			waitGoroutines(t, baseline, what)
			continue
		case byCoreRemoval:
			if mode != "wb" && mode != "wo" {
				model.check(t, readAll(core), what+": core device of a "+mode+" cache")
			}
			// Vol starts again by itself, the core re-attached to the
			// running cache with its dirty data.
			if err := e.reg.Register(core); err != nil {
				t.Fatal(err)
			}
		case byCacheRemoval:
			if mode != "wb" && mode != "wo" {
				model.check(t, readAll(core), what+": core device of a "+mode+" cache")
			}
			// Examine finds the cache's metadata and re-creates Vol.
			if err := e.reg.Register(cacheDev); err != nil {
				t.Fatal(err)
			}
		}
		if in, err := e.m.Get("Vol"); err != nil || !in.Started {
			t.Fatalf("%s: Vol once the base is back: %+v, %v", what, in, err)
		}
		vol, err = e.reg.Lookup("Vol")
		if err != nil {
			t.Fatal(err)
		}
		model.check(t, readAll(vol), what+": the volume once the base is back")
		if err := e.m.Delete("Vol"); err != nil {
			t.Fatalf("%s: delete after the base came back: %v", what, err)
		}
		model.check(t, readAll(core), what+": core device after the final Delete")
		waitGoroutines(t, baseline, what)
	}
}

// lifecycle is TestRandomLifecycle's world: the real manager and registry,
// and a model of what they should hold.
//
// Every core Ki is used only by vbdev Vi. Caches have fixed modes and line
// sizes. A core whose data a cache records (recs) has that cache as its
// home: Vi is only ever created there, since the cache may hold dirty data
// of Ki.
type lifecycle struct {
	t    *testing.T
	e    *env
	rng  *rand.Rand
	seed uint64
	step int
	log  []string // recent operations, for failure messages

	devs map[string]*malloc.Device
	reg  map[string]bool // base registered
	// recs: the cores a cache device's metadata records (attached or
	// detached): removed only by a Delete of a started vbdev.
	recs map[string]map[int]bool
	// run: the cache's engine runs (from its first vbdev's start until
	// its last vbdev, started or waiting, leaves).
	run   map[string]bool
	vb    [lcCores]*lcVbdev // nil: no such vbdev in the manager
	order []int             // vbdevs in creation order
	data  [lcCores][]byte   // acknowledged content of each core's volume
	// counts of what happened, logged at the end
	counts map[string]int
}

type lcVbdev struct {
	cache   string
	auto    bool // re-created by examine, not yet adopted by a create
	started bool
	// failed: its start was refused once both bases were there; it holds
	// no claim and retries only when a base of its own is registered or a
	// create names it (lifecycle.md).
	failed bool
}

const (
	lcCores     = 4
	lcCoreBytes = 512 << 10
)

var (
	lcCaches   = []string{"C0", "C1", "C2"}
	lcCacheCfg = map[string]struct {
		mode    string
		lineKiB uint64
	}{"C0": {"wb", 0}, "C1": {"wt", 8}, "C2": {"wo", 16}}
)

func lcCore(i int) string { return fmt.Sprintf("K%d", i) }
func lcVol(i int) string  { return fmt.Sprintf("V%d", i) }

func (l *lifecycle) fatalf(format string, args ...any) {
	l.t.Helper()
	l.t.Fatalf("seed %d step %d: %s\nrecent operations:\n  %s", l.seed, l.step, fmt.Sprintf(format, args...), strings.Join(l.log, "\n  "))
}

func (l *lifecycle) note(format string, args ...any) {
	l.log = append(l.log, fmt.Sprintf("%d: ", l.step)+fmt.Sprintf(format, args...))
	if len(l.log) > 25 {
		l.log = l.log[1:]
	}
}

// home returns the cache recording core i, or "".
func (l *lifecycle) home(i int) string {
	h := ""
	for _, c := range lcCaches {
		if l.recs[c][i] {
			if h != "" {
				l.fatalf("model: core %d recorded by %s and %s", i, h, c)
			}
			h = c
		}
	}
	return h
}

// names reports whether a vbdev that is not failed names cache (holding
// its claim while it is registered).
func (l *lifecycle) names(cache string) bool {
	for _, v := range l.vb {
		if v != nil && !v.failed && v.cache == cache {
			return true
		}
	}
	return false
}

// start is simStart for a vbdev that stays whatever happens: a refusal
// leaves it failed.
func (l *lifecycle) start(i int) error {
	v := l.vb[i]
	v.failed = false
	err := l.simStart(i)
	if err != nil {
		v.failed = true
		l.counts["vbdev failed"]++
	}
	return err
}

// simStart is the model of starting vbdev i: it waits for missing bases;
// a cache not running yet is loaded if it records core i, initialised if
// it records no core, and refused (foreign) otherwise.
func (l *lifecycle) simStart(i int) error {
	v := l.vb[i]
	if v.started || !l.reg[lcCore(i)] || !l.reg[v.cache] {
		return nil
	}
	if !l.run[v.cache] && len(l.recs[v.cache]) > 0 && !l.recs[v.cache][i] {
		return vbdev.ErrForeignCache
	}
	l.run[v.cache] = true
	l.recs[v.cache][i] = true
	v.started = true
	return nil
}

// settle is the model of the registry events a started volume causes:
// each is an arrival that makes the manager retry every waiting vbdev.
func (l *lifecycle) settle() {
	for changed := true; changed; {
		changed = false
		for _, i := range l.order {
			if v := l.vb[i]; !v.started && !v.failed && l.start(i) == nil && v.started {
				changed = true
			}
		}
	}
}

// forget removes vbdev i; a cache instance stops with its last vbdev.
func (l *lifecycle) forget(i int) {
	cache := l.vb[i].cache
	l.vb[i] = nil
	l.order = slices.DeleteFunc(l.order, func(x int) bool { return x == i })
	if !l.names(cache) {
		l.run[cache] = false
	}
}

func (l *lifecycle) params(i int, cache string) vbdev.Params {
	cfg := lcCacheCfg[cache]
	return vbdev.Params{Name: lcVol(i), Mode: cfg.mode, LineSizeKiB: cfg.lineKiB, CacheBdev: cache, CoreBdev: lcCore(i)}
}

// opCreate creates Vi on its home cache, or a random one.
func (l *lifecycle) opCreate(i int) {
	cache := l.home(i)
	if cache == "" {
		cache = lcCaches[l.rng.IntN(len(lcCaches))]
	}
	if v := l.vb[i]; v != nil {
		cache = v.cache
	}
	l.note("create %s on %s (core %s)", lcVol(i), cache, lcCore(i))
	_, err := l.e.m.Create(l.params(i, cache))
	var want error
	switch v := l.vb[i]; {
	case v != nil && v.auto:
		v.auto = false // adopted
		l.counts["create adopting an examined vbdev"]++
	case v != nil && v.failed:
		if want = l.start(i); want == nil {
			l.counts["create retrying a failed vbdev"]++
			l.settle()
		}
	case v != nil:
		want = vbdev.ErrNameExists
		l.counts["create of an existing name"]++
	default:
		l.vb[i] = &lcVbdev{cache: cache}
		l.order = append(l.order, i)
		loads := l.recs[cache][i] && l.reg[cache] && l.reg[lcCore(i)] && !l.run[cache]
		if want = l.simStart(i); want != nil {
			l.forget(i)
			l.counts["create refused: foreign cache"]++
		} else {
			switch {
			case loads:
				l.counts["create loading the cache"]++
			case l.vb[i].started:
				l.counts["create started"]++
			default:
				l.counts["create waiting for a base"]++
			}
			l.settle()
		}
	}
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		l.fatalf("create %s on %s: got error %v, want %v", lcVol(i), cache, err, want)
	}
}

// opDelete deletes Vi; a started one is written back to its core first.
func (l *lifecycle) opDelete(i int) {
	l.note("delete %s", lcVol(i))
	err := l.e.m.Delete(lcVol(i))
	v := l.vb[i]
	if v == nil {
		if !errors.Is(err, vbdev.ErrNoSuchVbdev) {
			l.fatalf("delete of the unknown vbdev %s: %v", lcVol(i), err)
		}
		return
	}
	if err != nil {
		l.fatalf("delete %s: %v", lcVol(i), err)
	}
	if v.started {
		delete(l.recs[v.cache], i)
		l.counts["delete of a started vbdev"]++
	} else if v.failed {
		l.counts["delete of a failed vbdev"]++
	} else {
		l.counts["delete of a waiting vbdev"]++
	}
	l.forget(i)
}

// opUnregister hot-removes a base bdev.
func (l *lifecycle) opUnregister(name string) {
	l.note("unregister %s", name)
	if _, err := l.e.reg.Unregister(name); err != nil {
		l.fatalf("unregister %s: %v", name, err)
	}
	l.reg[name] = false
	for _, i := range l.order {
		if v := l.vb[i]; v.started && (lcCore(i) == name || v.cache == name) {
			l.counts["started vbdev hot-removed"]++
		}
	}
	if _, isCache := lcCacheCfg[name]; isCache {
		l.run[name] = false
		for _, i := range slices.Clone(l.order) {
			if v := l.vb[i]; !v.failed && v.cache == name {
				l.forget(i) // the dirty path: the records stay
			}
		}
		return
	}
	// A core's vbdev waits for it on its cache, which keeps running and
	// keeps the core's record and data.
	var i int
	fmt.Sscanf(name, "K%d", &i)
	if v := l.vb[i]; v != nil && !v.failed {
		if v.started {
			l.counts["vbdev waiting for its hot-removed core"]++
		}
		v.started = false
	}
}

// opRegister brings a base bdev back: waiting vbdevs start (one whose core
// was hot-removed re-attaches it to its running cache), and a cache
// no vbdev names is examined, re-creating the vbdevs its metadata records.
func (l *lifecycle) opRegister(name string) {
	l.note("register %s", name)
	if err := l.e.reg.Register(l.devs[name]); err != nil {
		l.fatalf("register %s: %v", name, err)
	}
	l.reg[name] = true
	known := slices.ContainsFunc(l.order, func(i int) bool { return lcCore(i) == name || l.vb[i].cache == name })
	for _, i := range slices.Clone(l.order) {
		v := l.vb[i]
		if !v.failed || lcCore(i) == name || v.cache == name {
			l.start(i) // a refusal leaves it failed
		}
	}
	if _, isCache := lcCacheCfg[name]; isCache && !known {
		for i := range lcCores {
			if l.recs[name][i] && l.vb[i] == nil {
				l.counts["vbdev re-created by examine"]++
				l.vb[i] = &lcVbdev{cache: name, auto: true}
				l.order = append(l.order, i)
				l.simStart(i)
			}
		}
	}
	l.settle()
}

func (l *lifecycle) volume(i int) bdev.Device {
	d, err := l.e.reg.Lookup(lcVol(i))
	if err != nil {
		l.fatalf("volume %s: %v", lcVol(i), err)
	}
	return d
}

// opIO writes (FUA or not), reads and flushes a started volume.
func (l *lifecycle) opIO(i int) {
	vol := l.volume(i)
	n := 1 + l.rng.IntN(12)
	l.note("io on %s: %d requests", lcVol(i), n)
	for range n {
		off := int64(l.rng.IntN(lcCoreBytes/512)) * 512
		length := int64(1+l.rng.IntN(32)) * 512
		length = min(length, lcCoreBytes-off)
		switch op := l.rng.IntN(10); {
		case op < 6:
			p := make([]byte, length)
			for j := range p {
				p[j] = byte(l.rng.Uint32())
			}
			if err := vol.WriteAt(p, off, op == 0); err != nil {
				l.fatalf("%s write at %d+%d: %v", lcVol(i), off, length, err)
			}
			copy(l.data[i][off:], p)
			l.counts["writes"]++
		case op < 9:
			l.counts["reads checked"]++
			got := make([]byte, length)
			if err := vol.ReadAt(got, off); err != nil {
				l.fatalf("%s read at %d+%d: %v", lcVol(i), off, length, err)
			}
			if !bytes.Equal(got, l.data[i][off:off+length]) {
				l.fatalf("%s read at %d+%d: %d bytes differ from what was acknowledged", lcVol(i), off, length, lcDiff(got, l.data[i][off:off+length]))
			}
		default:
			if err := vol.Flush(); err != nil {
				l.fatalf("%s flush: %v", lcVol(i), err)
			}
		}
	}
}

// opBurst writes to every started volume from its own goroutine at once
// (shared caches see concurrent IO of several cores).
func (l *lifecycle) opBurst() {
	var live []int
	for _, i := range l.order {
		if l.vb[i].started {
			live = append(live, i)
		}
	}
	l.note("burst on %v", live)
	type write struct {
		off int64
		p   []byte
	}
	plans := make([][]write, len(live))
	for k := range live {
		for range 16 {
			off := int64(l.rng.IntN(lcCoreBytes/4096)) * 4096
			p := make([]byte, 4096*(1+l.rng.IntN(4)))
			p = p[:min(int64(len(p)), lcCoreBytes-off)]
			for j := range p {
				p[j] = byte(l.rng.Uint32())
			}
			plans[k] = append(plans[k], write{off, p})
		}
	}
	errs := make([]error, len(live))
	var wg sync.WaitGroup
	for k, i := range live {
		vol := l.volume(i)
		wg.Go(func() {
			for _, w := range plans[k] {
				if err := vol.WriteAt(w.p, w.off, false); err != nil {
					errs[k] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for k, i := range live {
		if errs[k] != nil {
			l.fatalf("burst write on %s: %v", lcVol(i), errs[k])
		}
		for _, w := range plans[k] {
			copy(l.data[i][w.off:], w.p)
		}
	}
	l.counts["burst writes"] += 16 * len(live)
}

// opFlushStart starts a background write-back and leaves it running into
// the next operations.
func (l *lifecycle) opFlushStart(i int) {
	l.note("flush start %s", lcVol(i))
	if err := l.e.m.FlushStart(lcVol(i), false); err != nil {
		l.fatalf("flush start %s: %v", lcVol(i), err)
	}
}

func lcDiff(a, b []byte) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// check compares the manager and the registry with the model: the vbdevs
// and their states, the volumes registered, the claims on the bases, and
// data (of every volume when full, else of those in also, and of the
// cores whose data no cache holds).
func (l *lifecycle) check(full bool, also ...int) {
	l.t.Helper()
	list := l.e.m.List("")
	var got, want []string
	for _, in := range list {
		got = append(got, fmt.Sprintf("%s(cache %s attached=%v, core %s attached=%v, started=%v, failed=%v)", in.Name, in.CacheBdev, in.CacheAttached, in.CoreBdev, in.CoreAttached, in.Started, in.State == vbdev.StateFailed))
	}
	for _, i := range l.order {
		v := l.vb[i]
		want = append(want, fmt.Sprintf("%s(cache %s attached=%v, core %s attached=%v, started=%v, failed=%v)", lcVol(i), v.cache, l.reg[v.cache] && !v.failed, lcCore(i), l.reg[lcCore(i)] && !v.failed, v.started, v.failed))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		l.fatalf("vbdevs differ from the model:\n got %v\nwant %v", got, want)
	}
	for _, in := range list {
		if cfg := lcCacheCfg[in.CacheBdev]; in.Started && (in.Mode != cfg.mode || in.LineSizeKiB != max(cfg.lineKiB, 4)) {
			l.fatalf("%s runs in mode %s with %d KiB lines, want %s and %d KiB", in.Name, in.Mode, in.LineSizeKiB, cfg.mode, max(cfg.lineKiB, 4))
		}
	}
	for i := range lcCores {
		_, err := l.e.reg.Lookup(lcVol(i))
		if live := l.vb[i] != nil && l.vb[i].started; live != (err == nil) {
			l.fatalf("volume %s registered=%v, want %v", lcVol(i), err == nil, live)
		}
	}
	for name, registered := range l.reg {
		_, err := l.e.reg.Lookup(name)
		if registered != (err == nil) {
			l.fatalf("base %s registered=%v, want %v", name, err == nil, registered)
		}
		if !registered {
			continue
		}
		var claim bool
		if _, isCache := lcCacheCfg[name]; isCache {
			claim = l.names(name)
		} else {
			var i int
			fmt.Sscanf(name, "K%d", &i)
			claim = l.vb[i] != nil && !l.vb[i].failed
		}
		owner, claimed := l.e.reg.ClaimOwner(name)
		if claimed != claim || claimed && owner != "bdev_ocf" {
			l.fatalf("base %s claimed=%v by %q, want claimed=%v", name, claimed, owner, claim)
		}
	}
	for i := range lcCores {
		v := l.vb[i]
		if v != nil && v.started && (full || slices.Contains(also, i)) {
			got := make([]byte, lcCoreBytes)
			if err := l.volume(i).ReadAt(got, 0); err != nil {
				l.fatalf("read %s: %v", lcVol(i), err)
			}
			if !bytes.Equal(got, l.data[i]) {
				l.fatalf("%s: %d bytes differ from what was acknowledged", lcVol(i), lcDiff(got, l.data[i]))
			}
			l.counts["whole volumes checked"]++
		}
		// The core device alone holds the data when no cache records the
		// core, and always under a write-through cache.
		if h := l.home(i); h == "" || lcCacheCfg[h].mode == "wt" {
			got := make([]byte, lcCoreBytes)
			if err := l.devs[lcCore(i)].ReadAt(got, 0); err != nil {
				l.fatalf("read core %s: %v", lcCore(i), err)
			}
			if !bytes.Equal(got, l.data[i]) {
				why := "no cache records it"
				if h != "" {
					why = "its cache " + h + " is write-through"
				}
				l.fatalf("core device %s (%s; vbdev %+v): %d bytes differ from what %s acknowledged", lcCore(i), why, v, lcDiff(got, l.data[i]), lcVol(i))
			}
			l.counts["core devices checked"]++
		}
	}
}

// TestRandomLifecycle runs random interleavings of vbdev create (shared
// caches included) and delete, hot-removal and re-registration of core
// and cache bases (a returning core re-attaches to the cache its vbdev
// waited on; a returning cache is examined and its vbdevs come back by
// loading it), background flushes and IO, against a model of which
// vbdevs exist and run, which bases are claimed, and what each volume
// holds. At the end every core's data is brought back and checked, every
// vbdev deleted, each core device alone must hold its data, nothing may
// stay claimed, and no goroutine may be left behind.
func TestRandomLifecycle(t *testing.T) {
	seed := testSeed(t, "BLOCKCACHE_LIFECYCLE_SEED")
	const runs, steps = 6, 300
	for run := range uint64(runs) {
		t.Run(fmt.Sprint(run), func(t *testing.T) { randomLifecycle(t, seed+run, steps) })
	}
}

func randomLifecycle(t *testing.T, seed uint64, steps int) {
	baseline := runtime.NumGoroutine()
	l := &lifecycle{t: t, e: newEnv(t), rng: rand.New(rand.NewPCG(seed, 2)), seed: seed,
		devs: map[string]*malloc.Device{}, reg: map[string]bool{}, recs: map[string]map[int]bool{}, run: map[string]bool{}, counts: map[string]int{}}
	for _, c := range lcCaches {
		l.devs[c] = l.e.malloc(c, 1)
		l.reg[c] = true
		l.recs[c] = map[int]bool{}
	}
	for i := range lcCores {
		d, err := malloc.New(lcCore(i), uuid.Nil, 512, lcCoreBytes/512)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.e.reg.Register(d); err != nil {
			t.Fatal(err)
		}
		l.devs[lcCore(i)] = d
		l.data[i] = make([]byte, lcCoreBytes)
	}
	for i := range lcCores {
		l.reg[lcCore(i)] = true
	}
	bases := append(slices.Clone(lcCaches), "K0", "K1", "K2", "K3")
	live := func() []int {
		var out []int
		for _, i := range l.order {
			if l.vb[i].started {
				out = append(out, i)
			}
		}
		return out
	}
	for l.step = 1; l.step <= steps; l.step++ {
		var registered, unregistered []string
		for _, b := range bases {
			if l.reg[b] {
				registered = append(registered, b)
			} else {
				unregistered = append(unregistered, b)
			}
		}
		i := l.rng.IntN(lcCores)
		// Volumes are read whole every tenth step, and each one that
		// (re)starts is read whole at once.
		wasLive := live()
		switch op := l.rng.IntN(100); {
		case op < 22:
			var absent []int
			for j := range lcCores {
				if l.vb[j] == nil || l.vb[j].auto {
					absent = append(absent, j)
				}
			}
			if len(absent) > 0 && l.rng.IntN(6) > 0 { // sometimes a duplicate name
				i = absent[l.rng.IntN(len(absent))]
			}
			l.opCreate(i)
		case op < 32:
			l.opDelete(i)
		case op < 44 && len(registered) > 0:
			l.opUnregister(registered[l.rng.IntN(len(registered))])
		case op < 58 && len(unregistered) > 0:
			l.opRegister(unregistered[l.rng.IntN(len(unregistered))])
		case op < 62:
			if lv := live(); len(lv) > 0 {
				l.opFlushStart(lv[l.rng.IntN(len(lv))])
			}
		case op < 67:
			l.opBurst()
		default:
			if lv := live(); len(lv) > 0 {
				l.opIO(lv[l.rng.IntN(len(lv))])
			}
		}
		var started []int
		for _, i := range live() {
			if !slices.Contains(wasLive, i) {
				started = append(started, i)
			}
		}
		l.check(l.step%10 == 0, started...)
	}

	// Bring everything back: every base, and every core's vbdev on its
	// home cache; then every volume must read back its data.
	l.step = 0
	for _, b := range bases {
		if !l.reg[b] {
			l.opRegister(b)
		}
	}
	for i := range lcCores {
		if h := l.home(i); h != "" && (l.vb[i] == nil || l.vb[i].auto) {
			l.opCreate(i)
		}
	}
	for i := range lcCores {
		if h := l.home(i); h != "" && !l.vb[i].started {
			l.fatalf("final: %s on %s, which holds data of %s, did not start: %+v", lcVol(i), h, lcCore(i), *l.vb[i])
		}
	}
	l.check(true)
	for _, i := range slices.Clone(l.order) {
		l.opDelete(i)
	}
	l.check(true)
	for i := range lcCores {
		if h := l.home(i); h != "" {
			l.fatalf("final: cache %s still records core %s after every vbdev was deleted", h, lcCore(i))
		}
	}
	for _, b := range bases {
		if owner, claimed := l.e.reg.ClaimOwner(b); claimed {
			l.fatalf("final: %s still claimed by %q", b, owner)
		}
	}
	t.Logf("seed %d: %d steps: %v", seed, steps, l.counts)
	waitGoroutines(t, baseline, fmt.Sprintf("seed %d: after deleting every vbdev", seed))
}

// TestExamineKeepsRecordedLineSize: a cache with 16 KiB lines, recording
// two cores, comes back (its bdev re-registered) while both cores are
// missing. Examine re-creates the vbdevs it records, waiting for their
// cores: they must report the cache's 16 KiB lines, and a bdev_ocf_create
// of one of them with the cache's true line size must load the cache, not
// be refused for a line-size mismatch (found by TestRandomLifecycle).
func TestExamineKeepsRecordedLineSize(t *testing.T) {
	e := newEnv(t)
	cache := e.malloc("Cache", 4)
	core1 := e.malloc("Core1", 1)
	e.malloc("Core2", 1)
	for _, v := range []struct{ name, core string }{{"V1", "Core1"}, {"V2", "Core2"}} {
		if _, err := e.m.Create(vbdev.Params{Name: v.name, Mode: "wb", LineSizeKiB: 16, CacheBdev: "Cache", CoreBdev: v.core}); err != nil {
			t.Fatal(err)
		}
	}
	vol, _ := e.reg.Lookup("V1")
	data := bytes.Repeat([]byte{0xa5}, 16384)
	if err := vol.WriteAt(data, 0, true); err != nil {
		t.Fatal(err)
	}
	// The cache goes (both vbdevs with it, their records kept), the
	// cores go, and the cache comes back first.
	for _, name := range []string{"Cache", "Core1", "Core2"} {
		if _, err := e.reg.Unregister(name); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.reg.Register(cache); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"V1", "V2"} {
		in, err := e.m.Get(name)
		if err != nil {
			t.Fatalf("examine did not re-create %s from the cache's metadata: %v", name, err)
		}
		if in.Started || in.LineSizeKiB != 16 {
			t.Errorf("%s re-created by examine, waiting for its core: started=%v, %d KiB lines; want waiting, with the cache's 16 KiB lines", name, in.Started, in.LineSizeKiB)
		}
	}
	// V1 is deleted while it waits (its record stays in the cache), its
	// core comes back, and V1 is created again as it was.
	if err := e.m.Delete("V1"); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Register(core1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Create(vbdev.Params{Name: "V1", Mode: "wb", LineSizeKiB: 16, CacheBdev: "Cache", CoreBdev: "Core1"}); err != nil {
		t.Fatalf("bdev_ocf_create with the cache's own 16 KiB line size, while examine's V2 waits for its core: %v", err)
	}
	vol, _ = e.reg.Lookup("V1")
	got := make([]byte, len(data))
	if err := vol.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("V1's dirty data after re-creating it on its cache: err %v, equal %v", err, bytes.Equal(got, data))
	}
}

// TestFlushRacingCoreHotRemove: a volume Flush that was admitted, and is
// writing the cache's metadata, when the core bdev is hot-removed must
// end with success or a clean error. (TestHotRemoveDuringHeavyIO found it
// dereferencing the detached core's nil device instead: ocf.Core.Flush
// checks the core's state without holding anything RemoveCore waits for,
// and RemoveCore(flush=false) sets Core.dev to nil.)
func TestFlushRacingCoreHotRemove(t *testing.T) {
	e := newEnv(t)
	m, err := malloc.New("Cache", uuid.Nil, 512, 8<<20/512)
	if err != nil {
		t.Fatal(err)
	}
	cache := bdevtest.NewFlushGate(m)
	if err := e.reg.Register(cache); err != nil {
		t.Fatal(err)
	}
	e.malloc("Core", 4)
	e.create("Vol", "wb", "Cache", "Core")
	vol, _ := e.reg.Lookup("Vol")
	// A write-back write: the next flush has metadata to write, and
	// flushes the cache device while doing so.
	if err := vol.WriteAt(bytes.Repeat([]byte{1}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	cache.Arm()
	flushed := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				flushed <- fmt.Errorf("panic: %v", p)
			}
		}()
		flushed <- vol.Flush()
	}()
	select {
	case <-cache.Entered():
	case <-time.After(10 * time.Second):
		t.Fatal("the volume flush never flushed the cache device")
	}
	removed := make(chan error, 1)
	go func() {
		_, err := e.reg.Unregister("Core")
		removed <- err
	}()
	// The removal may finish now, or wait for the flush in progress:
	// either is fine. Let the flush go on after it, or after a while.
	select {
	case err := <-removed:
		removed <- err
	case <-time.After(200 * time.Millisecond):
	}
	cache.Release()
	select {
	case err := <-flushed:
		if err != nil && !cleanIOError(err) {
			t.Fatalf("a volume flush in progress when the core was hot-removed: %v (want success or a clean error)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a volume flush in progress when the core was hot-removed hangs")
	}
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the hot-remove of the core hangs")
	}
}
