package ocf_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
	"blockcache/internal/ocf/ocftest"
)

// reload loads the cache held by env's cache device into a new instance
// and attaches env's cores to it by id.
func reload(t *testing.T, env *ocftest.Env) (*ocf.Cache, []*ocf.Core, *ocf.LoadReport) {
	t.Helper()
	c, rep, err := ocf.Load(env.CacheDev, ocf.Config{})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	var cores []*ocf.Core
	for i, dev := range env.CoreDevs {
		co, err := c.AddCore(ocf.CoreConfig{ID: ocf.CoreID(i), Device: dev, Volume: env.Cores[i].Info()})
		if err != nil {
			t.Fatalf("attach core %d: %v", i, err)
		}
		cores = append(cores, co)
	}
	if errs := c.Check(); len(errs) > 0 {
		t.Fatalf("check after load: %v", errs)
	}
	return c, cores, rep
}

func stopAll(t *testing.T, env *ocftest.Env) {
	t.Helper()
	for _, co := range env.Cores {
		if err := env.Cache.RemoveCore(co, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Cache.Stop(); err != nil {
		t.Fatal(err)
	}
}

func pattern(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// TestCleanStopKeepsDirtyData: wb data that is dirty at a clean stop is
// loaded dirty and correct, and the core alone does not have it yet.
func TestCleanStopKeepsDirtyData(t *testing.T) {
	for _, ls := range []int64{4 << 10, 64 << 10} {
		env := ocftest.New(t, ocftest.Options{Lines: 16, LineSize: ls, Mode: ocf.ModeWB, CoreBytes: 1 << 20})
		co := env.Cores[0]
		if err := co.WriteAt(pattern(0xd1, 8192), 4096, false); err != nil {
			t.Fatal(err)
		}
		// A clean line too: read miss fills it.
		clean := make([]byte, 4096)
		if err := co.ReadAt(clean, 512<<10); err != nil {
			t.Fatal(err)
		}
		stopAll(t, env)

		c, cores, rep := reload(t, env)
		if !rep.Clean || rep.DirtyLines == 0 || rep.DroppedClean != 0 {
			t.Fatalf("line %d: load report %+v, want clean with dirty lines and nothing dropped", ls, rep)
		}
		if s := c.Stats(); s.Usage.Dirty == 0 || s.Usage.Clean == 0 {
			t.Errorf("line %d: usage after load %+v, want clean and dirty lines", ls, s.Usage)
		}
		got := make([]byte, 8192)
		if err := cores[0].ReadAt(got, 4096); err != nil || !bytes.Equal(got, pattern(0xd1, 8192)) {
			t.Fatalf("line %d: read after load: %v", ls, err)
		}
		if err := env.CoreDevs[0].ReadAt(got, 4096); err != nil || bytes.Equal(got, pattern(0xd1, 8192)) {
			t.Fatalf("line %d: the core has the dirty data before any flush (err %v)", ls, err)
		}
		if err := c.FlushDirty(nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := env.CoreDevs[0].ReadAt(got, 4096); err != nil || !bytes.Equal(got, pattern(0xd1, 8192)) {
			t.Fatalf("line %d: core after flushing the loaded cache (err %v)", ls, err)
		}
	}
}

// TestUncleanLoadKeepsOnlyDirty: after a stop without Stop (the process
// died), flushed dirty data is loaded and clean lines are dropped.
func TestUncleanLoadKeepsOnlyDirty(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWB, CoreBytes: 1 << 20})
	co := env.Cores[0]
	if err := co.WriteAt(pattern(0xa5, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := co.WriteAt(pattern(0x5a, 4096), 8192, true); err != nil { // FUA
		t.Fatal(err)
	}
	if err := co.ReadAt(make([]byte, 4096), 64<<10); err != nil { // a clean line
		t.Fatal(err)
	}
	if err := co.Flush(); err != nil {
		t.Fatal(err)
	}
	c, cores, rep := reload(t, env)
	if rep.Clean || rep.DirtyLines != 2 {
		t.Fatalf("load report %+v, want unclean with 2 dirty lines", rep)
	}
	if s := c.Stats(); s.Usage.Clean != 0 || s.Usage.Dirty != 2 {
		t.Errorf("usage %+v, want only the 2 dirty lines", s.Usage)
	}
	for _, w := range []struct {
		off int64
		b   byte
	}{{0, 0xa5}, {8192, 0x5a}} {
		got := make([]byte, 4096)
		if err := cores[0].ReadAt(got, w.off); err != nil || !bytes.Equal(got, pattern(w.b, 4096)) {
			t.Fatalf("read at %d after unclean load: %v", w.off, err)
		}
	}
}

// TestCorruptEntryRefused: a flipped byte in any entry sector makes Load
// fail with a corruption error naming the sector.
func TestCorruptEntryRefused(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 200, Mode: ocf.ModeWB, CoreBytes: 4 << 20})
	if err := env.Cores[0].WriteAt(pattern(1, 4096), 0, true); err != nil {
		t.Fatal(err)
	}
	stopAll(t, env)
	img := make([]byte, env.CacheDev.Info().SizeBytes())
	if err := env.CacheDev.ReadAt(img, 0); err != nil {
		t.Fatal(err)
	}
	g := metadata.ComputeGeometry(int64(len(img)), ocf.DefaultLineSize)
	for sector := int64(0); sector < g.EntrySectors; sector++ {
		for _, b := range []int64{0, 7, 300, 511} {
			bad := bytes.Clone(img)
			bad[g.EntrySectorOffset(sector)+b] ^= 0x40
			dev := imageDevice(t, bad)
			_, _, err := ocf.Load(dev, ocf.Config{})
			if !metadata.IsCorrupt(err) {
				t.Fatalf("flip in entry sector %d byte %d: load error %v, want corruption", sector, b, err)
			}
			if !bytes.Contains([]byte(err.Error()), []byte("entry sector")) {
				t.Errorf("corruption error does not name the region: %v", err)
			}
		}
	}
	// A damaged superblock copy is survived: the other one is used, and
	// the damage reported.
	bad := bytes.Clone(img)
	bad[100] ^= 1
	_, rep, err := ocf.Load(imageDevice(t, bad), ocf.Config{})
	if err != nil || rep.Damaged == nil {
		t.Fatalf("one damaged superblock copy: err %v, damaged %v; want a load that reports it", err, rep)
	}
	bad[metadata.SuperblockCopyBytes+100] ^= 1
	if _, _, err := ocf.Load(imageDevice(t, bad), ocf.Config{}); !metadata.IsCorrupt(err) {
		t.Fatalf("both superblock copies damaged: %v, want corruption", err)
	}
	if _, _, err := ocf.Load(imageDevice(t, make([]byte, len(img))), ocf.Config{}); !errors.Is(err, metadata.ErrNoMetadata) {
		t.Fatalf("blank device: %v, want ErrNoMetadata", err)
	}
}

func imageDevice(t *testing.T, img []byte) bdev.Device {
	t.Helper()
	d, err := malloc.New("img", uuid.Nil, 512, uint64(len(img)/512))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteAt(img, 0, false); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestVerifyIsReadOnly: Verify checks a device without writing to it, and
// reports damage as Load does.
func TestVerifyIsReadOnly(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWB, CoreBytes: 1 << 20})
	if err := env.Cores[0].WriteAt(pattern(3, 8192), 0, true); err != nil {
		t.Fatal(err)
	}
	stopAll(t, env)
	img := make([]byte, env.CacheDev.Info().SizeBytes())
	if err := env.CacheDev.ReadAt(img, 0); err != nil {
		t.Fatal(err)
	}
	rep, err := ocf.Verify(env.CacheDev, nil)
	if err != nil || !rep.Clean || rep.DirtyLines != 2 {
		t.Fatalf("verify: %+v, %v; want clean with 2 dirty lines", rep, err)
	}
	after := make([]byte, len(img))
	if err := env.CacheDev.ReadAt(after, 0); err != nil || !bytes.Equal(img, after) {
		t.Fatalf("verify changed the device (err %v)", err)
	}
	img[metadata.SuperblockArea+20] ^= 8
	if _, err := ocf.Verify(imageDevice(t, img), nil); !metadata.IsCorrupt(err) {
		t.Fatalf("verify of a damaged device: %v, want corruption", err)
	}
}

// TestFUAWaitsForSyncInFlight: with volatile dirty metadata, a FUA write
// over sectors already dirty changes no metadata of its own, but the change
// that made them dirty may have been taken by a sync still writing it. The
// FUA write must not return before that sync has made it durable.
func TestFUAWaitsForSyncInFlight(t *testing.T) {
	var gate *bdevtest.FlushGate
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWB, VolatileDirtyMetadata: true, WrapCache: func(d bdev.Device) bdev.Device {
		gate = bdevtest.NewFlushGate(d)
		return gate
	}})
	co := env.Cores[0]
	// Line 1: its stripe is not the one Core.Flush holds.
	const off = 4096
	volWrite(t, co, tagged('1', off, 4096), off, false) // dirty, not yet durable

	gate.Arm()
	synced := make(chan error, 1)
	go func() { synced <- co.Flush() }() // the sync takes the change, then blocks
	<-gate.Entered()

	wrote := make(chan error, 1)
	go func() { wrote <- co.WriteAt(tagged('2', off, 4096), off, true) }()
	select {
	case err := <-wrote:
		t.Fatalf("FUA write returned (%v) while the sync making its line's dirty state durable was still in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	gate.Release()
	if err := <-synced; err != nil {
		t.Fatalf("flush: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("FUA write: %v", err)
	}
	expectBytes(t, "after the FUA write", volRead(t, co, off, 4096), tagged('2', off, 4096))
}
