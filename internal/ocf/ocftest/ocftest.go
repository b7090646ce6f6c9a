// Package ocftest builds caches for tests: malloc-backed cache and core
// devices, cleaned up with the test, with ocf.Check run at cleanup so every
// test that builds a cache also checks its metadata, like bbolt's MustCheck.
package ocftest

import (
	"fmt"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
)

// Options sizes a test cache.
type Options struct {
	Lines     int   // cache lines the cache device holds (at least)
	LineSize  int64 // bytes; 0 = 4 KiB
	Mode      ocf.Mode
	Cores     int   // number of cores; 0 = 1
	CoreBytes int64 // each core's size; 0 = 1 MiB
	// Promotion and SeqCutoff are passed to ocf.Config.
	Promotion ocf.PromotionPolicy
	SeqCutoff ocf.SeqCutoff
	// VolatileDirtyMetadata is passed to ocf.Config: dirty state is
	// durable at flush or FUA only.
	VolatileDirtyMetadata bool
	// CoreBlockSize is each core device's block size in bytes; 0 = 512.
	CoreBlockSize uint32
	// WrapCache and WrapCore, when set, wrap the malloc devices before the
	// cache sees them (fault injection, IO counting). Env.CacheDev and
	// Env.CoreDevs stay the bare malloc devices: a back door around the
	// wrappers and the cache.
	WrapCache func(bdev.Device) bdev.Device
	WrapCore  func(core int, dev bdev.Device) bdev.Device
}

// Env is a cache with its devices.
type Env struct {
	Cache    *ocf.Cache
	CacheDev *malloc.Device
	Cores    []*ocf.Core
	CoreDevs []*malloc.Device
}

// CacheDevBytes returns a cache device size holding at least lines lines of
// lineSize bytes after the metadata.
func CacheDevBytes(lines int, lineSize int64) int64 { return ocf.DeviceBytesFor(lines, lineSize) }

// TB is the part of testing.TB that New needs; *testing.T and *rapid.T both
// provide it.
type TB interface {
	Fatal(args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
}

// New builds a cache as opts says and registers its cleanup: at the end of
// the test the cache's metadata is checked and the test fails on any finding.
func New(t TB, opts Options) *Env {
	if opts.LineSize == 0 {
		opts.LineSize = ocf.DefaultLineSize
	}
	if opts.Cores == 0 {
		opts.Cores = 1
	}
	if opts.CoreBytes == 0 {
		opts.CoreBytes = 1 << 20
	}
	if opts.Lines == 0 {
		opts.Lines = 16
	}
	size := CacheDevBytes(opts.Lines, opts.LineSize)
	cdev, err := malloc.New("cache", uuid.Nil, 512, uint64(size/512))
	if err != nil {
		t.Fatal(err)
	}
	var cacheDev bdev.Device = cdev
	if opts.WrapCache != nil {
		cacheDev = opts.WrapCache(cdev)
	}
	c, err := ocf.New(cacheDev, ocf.Config{LineSize: opts.LineSize, Mode: opts.Mode, Promotion: opts.Promotion, SeqCutoff: opts.SeqCutoff,
		VolatileDirtyMetadata: opts.VolatileDirtyMetadata})
	if err != nil {
		t.Fatal(err)
	}
	if opts.CoreBlockSize == 0 {
		opts.CoreBlockSize = 512
	}
	env := &Env{Cache: c, CacheDev: cdev}
	for i := range opts.Cores {
		name := fmt.Sprintf("core%d", i)
		dev, err := malloc.New(name, uuid.Nil, opts.CoreBlockSize, uint64(opts.CoreBytes/int64(opts.CoreBlockSize)))
		if err != nil {
			t.Fatal(err)
		}
		var coreDev bdev.Device = dev
		if opts.WrapCore != nil {
			coreDev = opts.WrapCore(i, dev)
		}
		co, err := c.AddCore(ocf.CoreConfig{ID: ocf.CoreID(i), Device: coreDev, Volume: bdev.Info{Name: fmt.Sprintf("cache%d", i), ProductName: "SPDK OCF"}})
		if err != nil {
			t.Fatal(err)
		}
		env.Cores = append(env.Cores, co)
		env.CoreDevs = append(env.CoreDevs, dev)
	}
	t.Cleanup(func() {
		if errs := c.Check(); len(errs) > 0 {
			t.Errorf("cache check at cleanup: %v", errs)
		}
	})
	return env
}
