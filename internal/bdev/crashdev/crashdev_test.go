package crashdev_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/crashdev"
	"blockcache/internal/bdev/malloc"
)

const sector = bdev.SectorSize

func newMalloc(t testing.TB, blockSize uint32, numBlocks uint64) *malloc.Device {
	t.Helper()
	m, err := malloc.New("mem0", uuid.MustParse("6b1d5c1e-8a0e-4a53-9c39-3f0f7a3e2d11"), blockSize, numBlocks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// plain hides every optional ability of d.
func plain(d bdev.Device) bdev.Device { return bdevtest.Restrict(d, bdev.Abilities{}) }

func TestConformance(t *testing.T) {
	for _, bs := range []uint32{512, 4096} {
		t.Run(fmt.Sprintf("malloc%d", bs), func(t *testing.T) {
			bdevtest.Run(t, func(t *testing.T) bdev.Device { return crashdev.New(newMalloc(t, bs, 64)) })
		})
	}
	t.Run("noAbilities", func(t *testing.T) {
		bdevtest.Run(t, func(t *testing.T) bdev.Device { return crashdev.New(plain(newMalloc(t, 512, 64))) })
	})
	t.Run("clone", func(t *testing.T) {
		bdevtest.Run(t, func(t *testing.T) bdev.Device {
			c, err := crashdev.New(newMalloc(t, 4096, 32)).CrashClone(crashdev.CrashCloneConfig{})
			if err != nil {
				t.Fatal(err)
			}
			return c
		})
	})
}

func TestAbilitiesFollowInner(t *testing.T) {
	full := crashdev.New(newMalloc(t, 512, 16))
	if full.Info().Abilities != (bdev.Abilities{Discard: true, WriteZeroes: true, ZeroesOnDiscard: true}) {
		t.Error("over malloc: want discard, write-zeroes and zeroes-on-discard")
	}
	none := crashdev.New(plain(newMalloc(t, 512, 16)))
	if none.Info().Abilities != (bdev.Abilities{}) {
		t.Error("over a device without abilities: reports some")
	}
	for name, err := range map[string]error{
		"Discard":     none.Discard(0, sector),
		"WriteZeroes": none.WriteZeroes(0, sector),
	} {
		if !errors.Is(err, bdev.ErrNotSupported) {
			t.Errorf("%s = %v, want ErrNotSupported", name, err)
		}
	}
	c := clone(t, none, 0, 0)
	if c.Info().Abilities != (bdev.Abilities{}) {
		t.Error("clone of a device without abilities reports the abilities of its RAM copy")
	}
}

// clone crash-clones d or fails the test, and closes the clone at cleanup.
func clone(t testing.TB, d *crashdev.Device, pct int, seed uint64) *crashdev.Device {
	t.Helper()
	c, err := d.CrashClone(crashdev.CrashCloneConfig{UnflushedPercent: pct, RNG: rand.New(rand.NewPCG(seed, 1))})
	if err != nil {
		t.Fatalf("CrashClone(%d%%, seed %d): %v", pct, seed, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readAll(t testing.TB, d bdev.Device) []byte {
	t.Helper()
	return bdevtest.MustRead(t, d, 0, int(d.Info().SizeBytes()))
}

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func TestFlushMakesDurable(t *testing.T) {
	m := newMalloc(t, 4096, 8)
	d := crashdev.New(m)
	bdevtest.MustWrite(t, d, fill(1, 8192), 0, false)
	bdevtest.MustWrite(t, d, fill(2, 4096), 4096, false)
	if got := d.Unflushed(); got != 16 {
		t.Fatalf("Unflushed = %d, want 16", got)
	}
	if got := bdevtest.MustRead(t, m, 0, 8192); !bytes.Equal(got, make([]byte, 8192)) {
		t.Fatal("an unflushed write reached the inner device")
	}
	want := append(fill(1, 4096), fill(2, 4096)...)
	if got := bdevtest.MustRead(t, d, 0, 8192); !bytes.Equal(got, want) {
		t.Fatal("unflushed writes are not visible to reads")
	}
	if got := readAll(t, clone(t, d, 0, 0)); !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("0% clone before flush holds unflushed data")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := d.Unflushed(); got != 0 {
		t.Fatalf("Unflushed after Flush = %d", got)
	}
	if got := bdevtest.MustRead(t, m, 0, 8192); !bytes.Equal(got, want) {
		t.Fatal("Flush did not apply the latest versions to the inner device")
	}
	if got := readAll(t, clone(t, d, 0, 0)); !bytes.Equal(got[:8192], want) || !bytes.Equal(got[8192:], make([]byte, len(got)-8192)) {
		t.Fatal("0% clone after flush differs from the flushed data")
	}
}

func TestFUAIsDurable(t *testing.T) {
	d := crashdev.New(newMalloc(t, 512, 16))
	bdevtest.MustWrite(t, d, fill(1, 4*sector), 0, false) // sectors 0-3, volatile
	bdevtest.MustWrite(t, d, fill(2, 2*sector), sector, true)
	if got := d.Unflushed(); got != 2 {
		t.Fatalf("Unflushed = %d, want 2 (sectors 0 and 3)", got)
	}
	want := append(append(fill(1, sector), fill(2, 2*sector)...), fill(1, sector)...)
	if got := bdevtest.MustRead(t, d, 0, 4*sector); !bytes.Equal(got, want) {
		t.Fatal("read after FUA write differs")
	}
	// Whatever survives, sectors 1-2 hold the FUA data: their older
	// unflushed versions are gone. Sectors 0 and 3 are 0 or 1.
	for seed := range uint64(20) {
		got := bdevtest.MustRead(t, clone(t, d, 100, seed), 0, 4*sector)
		if !bytes.Equal(got[sector:3*sector], fill(2, 2*sector)) {
			t.Fatalf("seed %d: FUA sectors not durable or an older version came back", seed)
		}
		for _, s := range []int{0, 3} {
			if b := got[s*sector : (s+1)*sector]; !bytes.Equal(b, fill(1, sector)) {
				t.Fatalf("seed %d: 100%% clone lost sector %d's only version", seed, s)
			}
		}
		got = bdevtest.MustRead(t, clone(t, d, 0, seed), 0, 4*sector)
		if !bytes.Equal(got, append(append(make([]byte, sector), fill(2, 2*sector)...), make([]byte, sector)...)) {
			t.Fatalf("seed %d: 0%% clone is not durable image plus FUA data", seed)
		}
	}
}

func TestZeroingIsVolatileUntilFlush(t *testing.T) {
	for _, op := range []struct {
		name string
		do   func(d *crashdev.Device, off, n int64) error
	}{
		{"Discard", (*crashdev.Device).Discard},
		{"WriteZeroes", (*crashdev.Device).WriteZeroes},
	} {
		t.Run(op.name, func(t *testing.T) {
			d := crashdev.New(newMalloc(t, 512, 16))
			bdevtest.MustWrite(t, d, fill(7, 4*sector), 0, true)
			if err := op.do(d, sector, 2*sector); err != nil {
				t.Fatal(err)
			}
			want := append(append(fill(7, sector), make([]byte, 2*sector)...), fill(7, sector)...)
			if got := bdevtest.MustRead(t, d, 0, 4*sector); !bytes.Equal(got, want) {
				t.Fatal("zeroed range does not read back as zeroes")
			}
			if got := bdevtest.MustRead(t, clone(t, d, 0, 0), 0, 4*sector); !bytes.Equal(got, fill(7, 4*sector)) {
				t.Fatal("unflushed zeroing reached the durable image")
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := bdevtest.MustRead(t, clone(t, d, 0, 0), 0, 4*sector); !bytes.Equal(got, want) {
				t.Fatal("flushed zeroing not durable")
			}
		})
	}
}

// TestCloneZeroPercent checks that a 0% clone is exactly the durable image,
// whatever is unflushed, and needs no RNG.
func TestCloneZeroPercent(t *testing.T) {
	d := crashdev.New(newMalloc(t, 512, 64))
	durable := bdevtest.Pattern(1, 64*sector)
	bdevtest.MustWrite(t, d, durable, 0, true)
	r := rand.New(rand.NewPCG(5, 5))
	for i := range 50 {
		off := int64(r.IntN(60)) * sector
		bdevtest.MustWrite(t, d, bdevtest.Pattern(uint64(i)+10, 4*sector), off, false)
	}
	c, err := d.CrashClone(crashdev.CrashCloneConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := readAll(t, c); !bytes.Equal(got, durable) {
		t.Fatal("0% clone differs from the durable image")
	}
	if c.Info() != d.Info() {
		t.Fatalf("clone Info %+v, want %+v", c.Info(), d.Info())
	}
	if c.Unflushed() != 0 {
		t.Fatal("clone starts with unflushed sectors")
	}
}

// history writes random versions over a small device without flushing, and
// returns, per sector, the set of values it may hold after a power loss
// (durable value first, then each unflushed version).
func history(t *testing.T, d *crashdev.Device, seed uint64) [][][]byte {
	t.Helper()
	n := int(d.Info().SizeBytes() / sector)
	durable := bdevtest.Pattern(seed, n*sector)
	bdevtest.MustWrite(t, d, durable, 0, true)
	possible := make([][][]byte, n)
	for s := range n {
		possible[s] = [][]byte{durable[s*sector : (s+1)*sector]}
	}
	r := rand.New(rand.NewPCG(seed, 2))
	for i := range 40 {
		blocks := int(d.Info().NumBlocks)
		bs := int(d.Info().BlockSize)
		b := r.IntN(blocks)
		nb := 1 + r.IntN(min(3, blocks-b))
		p := bdevtest.Pattern(seed*1000+uint64(i), nb*bs)
		bdevtest.MustWrite(t, d, p, int64(b*bs), false)
		for j := range nb * bs / sector {
			s := b*bs/sector + j
			possible[s] = append(possible[s], p[j*sector:(j+1)*sector])
		}
	}
	return possible
}

func indexOf(vs [][]byte, v []byte) int {
	for i, w := range vs {
		if bytes.Equal(w, v) {
			return i
		}
	}
	return -1
}

// TestCloneHundredPercent checks that with 100% every unflushed sector holds
// one of its unflushed versions, that every version is drawn over several
// seeds, and that a seed fixes the outcome.
func TestCloneHundredPercent(t *testing.T) {
	d := crashdev.New(newMalloc(t, 1024, 16))
	possible := history(t, d, 3)
	n := len(possible)
	seen := make([]map[int]bool, n)
	for s := range seen {
		seen[s] = map[int]bool{}
	}
	var first []byte
	differs := false
	for seed := range uint64(200) {
		img := readAll(t, clone(t, d, 100, seed))
		if seed == 0 {
			first = img
		} else if !bytes.Equal(img, first) {
			differs = true
		}
		for s := range n {
			i := indexOf(possible[s], img[s*sector:(s+1)*sector])
			switch {
			case i < 0:
				t.Fatalf("seed %d: sector %d holds a value never written to it", seed, s)
			case i == 0 && len(possible[s]) > 1:
				t.Fatalf("seed %d: sector %d kept its durable value at 100%%", seed, s)
			}
			seen[s][i] = true
		}
	}
	for s := range n {
		for i := 1; i < len(possible[s]); i++ {
			if !seen[s][i] {
				t.Errorf("sector %d: version %d of %d never drawn in 200 clones", s, i, len(possible[s])-1)
			}
		}
	}
	if !differs {
		t.Error("200 seeds all gave the same image")
	}
	for _, seed := range []uint64{0, 7, 199} {
		a, b := readAll(t, clone(t, d, 100, seed)), readAll(t, clone(t, d, 100, seed))
		if !bytes.Equal(a, b) {
			t.Fatalf("seed %d: two clones differ", seed)
		}
	}
}

// TestClonePartial checks that at 50% some unflushed sectors keep their
// durable value and some take a later one, never anything else.
func TestClonePartial(t *testing.T) {
	d := crashdev.New(newMalloc(t, 512, 32))
	possible := history(t, d, 9)
	var kept, lost int
	for seed := range uint64(50) {
		img := readAll(t, clone(t, d, 50, seed))
		for s, vs := range possible {
			switch i := indexOf(vs, img[s*sector:(s+1)*sector]); {
			case i < 0:
				t.Fatalf("seed %d: sector %d holds a value never written to it", seed, s)
			case i == 0 && len(vs) > 1:
				lost++
			case i > 0:
				kept++
			}
		}
	}
	if kept == 0 || lost == 0 {
		t.Fatalf("50%% clones: %d unflushed sectors kept, %d lost; want both", kept, lost)
	}
}

// TestTornWrite checks that an unflushed 4 KiB write can come back partly
// applied, at sector granularity.
func TestTornWrite(t *testing.T) {
	d := crashdev.New(newMalloc(t, 4096, 4))
	old := fill(0xAA, 4096)
	bdevtest.MustWrite(t, d, old, 4096, true)
	bdevtest.MustWrite(t, d, fill(0x55, 4096), 4096, false)
	outcomes := map[string]bool{}
	for seed := range uint64(100) {
		got := bdevtest.MustRead(t, clone(t, d, 50, seed), 4096, 4096)
		var mask []byte
		for s := range 8 {
			switch b := got[s*sector : (s+1)*sector]; {
			case bytes.Equal(b, fill(0xAA, sector)):
				mask = append(mask, 'o')
			case bytes.Equal(b, fill(0x55, sector)):
				mask = append(mask, 'n')
			default:
				t.Fatalf("seed %d: sector %d torn inside a sector", seed, s)
			}
		}
		outcomes[string(mask)] = true
	}
	torn := 0
	for m := range outcomes {
		if bytes.ContainsRune([]byte(m), 'o') && bytes.ContainsRune([]byte(m), 'n') {
			torn++
		}
	}
	if torn == 0 {
		t.Fatalf("no torn outcome in 100 clones: %v", outcomes)
	}
}

// TestOriginalKeepsWorking checks that the crashed device and its clone are
// independent: neither one's later writes or flushes reach the other.
func TestOriginalKeepsWorking(t *testing.T) {
	d := crashdev.New(newMalloc(t, 512, 16))
	bdevtest.MustWrite(t, d, fill(1, 16*sector), 0, true)
	bdevtest.MustWrite(t, d, fill(2, 4*sector), 0, false)
	c := clone(t, d, 0, 0)

	bdevtest.MustWrite(t, d, fill(3, 4*sector), 4*sector, false)
	bdevtest.MustWrite(t, d, fill(4, 4*sector), 8*sector, true)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c); !bytes.Equal(got, fill(1, 16*sector)) {
		t.Fatal("the original's writes after the clone reached the clone")
	}
	want := append(append(append(fill(2, 4*sector), fill(3, 4*sector)...), fill(4, 4*sector)...), fill(1, 4*sector)...)
	if got := readAll(t, d); !bytes.Equal(got, want) {
		t.Fatal("original lost data after the clone")
	}

	bdevtest.MustWrite(t, c, fill(9, 16*sector), 0, true)
	if got := readAll(t, d); !bytes.Equal(got, want) {
		t.Fatal("the clone's writes reached the original")
	}
	if got := readAll(t, clone(t, c, 0, 0)); !bytes.Equal(got, fill(9, 16*sector)) {
		t.Fatal("a clone of a clone lost the clone's FUA write")
	}
}

func TestCloseKeepsCrashClone(t *testing.T) {
	m := newMalloc(t, 512, 16)
	d := crashdev.New(m)
	bdevtest.MustWrite(t, d, fill(1, sector), 0, true)
	bdevtest.MustWrite(t, d, fill(2, sector), sector, false)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteAt(fill(3, sector), 0, false); !errors.Is(err, bdev.ErrClosed) {
		t.Fatalf("WriteAt after Close = %v", err)
	}
	if d.Unflushed() != 1 {
		t.Fatalf("Unflushed after Close = %d, want 1", d.Unflushed())
	}
	got := bdevtest.MustRead(t, clone(t, d, 100, 0), 0, 2*sector)
	if !bytes.Equal(got, append(fill(1, sector), fill(2, sector)...)) {
		t.Fatal("CrashClone after Close lost data")
	}
	if err := m.ReadAt(make([]byte, sector), 0); err != nil {
		t.Fatalf("Close closed the inner device: %v", err)
	}
}

func TestCrashCloneConfigErrors(t *testing.T) {
	d := crashdev.New(newMalloc(t, 512, 16))
	for _, cfg := range []crashdev.CrashCloneConfig{
		{UnflushedPercent: -1, RNG: rand.New(rand.NewPCG(1, 1))},
		{UnflushedPercent: 101, RNG: rand.New(rand.NewPCG(1, 1))},
		{UnflushedPercent: 50},
	} {
		if c, err := d.CrashClone(cfg); err == nil {
			c.Close()
			t.Errorf("CrashClone(%d%%, rng %v) succeeded", cfg.UnflushedPercent, cfg.RNG != nil)
		}
	}
	m := newMalloc(t, 512, 16)
	d = crashdev.New(m)
	m.Close()
	if _, err := d.CrashClone(crashdev.CrashCloneConfig{}); !errors.Is(err, bdev.ErrClosed) {
		t.Errorf("CrashClone over a closed inner device = %v, want ErrClosed", err)
	}
}

// TestConcurrentClones runs writers, flushers and cloners together. Every
// clone must hold, per block, a value some writer wrote (or the initial
// zeroes), and after a final flush a 0% clone equals the device.
func TestConcurrentClones(t *testing.T) {
	const blocks = 32
	d := crashdev.New(newMalloc(t, 4096, blocks))
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 3))
			for i := range 200 {
				b := r.IntN(blocks - 1)
				p := fill(byte(w*50+i%50+1), 2*4096)
				if err := d.WriteAt(p, int64(b)*4096, i%7 == 0); err != nil {
					t.Error(err)
					return
				}
				if i%20 == 0 {
					if err := d.Flush(); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	for c := range 2 {
		wg.Go(func() {
			for i := range 10 {
				cl, err := d.CrashClone(crashdev.CrashCloneConfig{UnflushedPercent: 50, RNG: rand.New(rand.NewPCG(uint64(c), uint64(i)))})
				if err != nil {
					t.Error(err)
					return
				}
				img := make([]byte, blocks*4096)
				if err := cl.ReadAt(img, 0); err != nil {
					t.Error(err)
				}
				for s := range len(img) / sector {
					if b := img[s*sector : (s+1)*sector]; !bytes.Equal(b, fill(b[0], sector)) {
						t.Errorf("clone sector %d mixes writes inside a sector", s)
					}
				}
				cl.Close()
			}
		})
	}
	wg.Wait()
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if d.Unflushed() != 0 {
		t.Fatal("unflushed sectors after the final flush")
	}
	if !bytes.Equal(readAll(t, clone(t, d, 0, 0)), readAll(t, d)) {
		t.Fatal("after a final flush, a 0% clone differs from the device")
	}
}
