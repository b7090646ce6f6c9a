package ocf_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// TestFlushModel runs random writes, reads and mode changes against a flat
// byte array per core, with flushes (of one core or the whole cache, with
// or without the write-through switch, in batches of 1-3 lines) during
// which more writes arrive between batches and which are cancelled at a
// random point. Every read must equal the model; a flush must end, a
// cancelled one with ErrFlushCancelled; its write-through hold must be
// gone when it returns; one with the switch that was not cancelled leaves
// no dirty line on its cores, whose devices then equal the model; the
// metadata checks clean after each op.
func TestFlushModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		lineSize := rapid.SampledFrom([]int64{4 << 10, 16 << 10, 64 << 10}).Draw(rt, "lineSize")
		mode := rapid.SampledFrom(ocf.Modes()).Draw(rt, "mode")
		nCores := rapid.IntRange(1, 2).Draw(rt, "cores")
		lines := rapid.IntRange(1, 12).Draw(rt, "lines")
		coreBytes := lineSize * int64(rapid.IntRange(2, 16).Draw(rt, "coreLines"))
		env := ocftest.New(rt, ocftest.Options{Lines: lines, LineSize: lineSize, Mode: mode, Cores: nCores, CoreBytes: coreBytes})
		fm := &flushModel{env: env, coreBytes: coreBytes}
		for range env.Cores {
			fm.want = append(fm.want, make([]byte, coreBytes))
		}
		rt.Repeat(map[string]func(*rapid.T){
			"write": fm.write,
			"read": func(t *rapid.T) {
				core := rapid.IntRange(0, nCores-1).Draw(t, "core")
				fm.checkVolume(t, core, "read")
			},
			"setMode": func(t *rapid.T) {
				if err := env.Cache.SetMode(rapid.SampledFrom(ocf.Modes()).Draw(t, "mode"), false); err != nil {
					t.Fatalf("set mode: %v", err)
				}
			},
			"flush": fm.flush,
			"": func(t *rapid.T) {
				if errs := env.Cache.Check(); len(errs) > 0 {
					t.Fatalf("check: %v", errs)
				}
			},
		})
	})
}

type flushModel struct {
	env       *ocftest.Env
	coreBytes int64
	want      [][]byte
	seq       byte
}

// write writes a random sector range of a random core, FUA or not.
func (fm *flushModel) write(t *rapid.T) {
	core := rapid.IntRange(0, len(fm.want)-1).Draw(t, "core")
	sectors := fm.coreBytes / 512
	start := rapid.Int64Range(0, sectors-1).Draw(t, "sector")
	n := rapid.Int64Range(1, min(sectors-start, 2*fm.env.Cache.LineSize()/512)).Draw(t, "sectors") * 512
	off := start * 512
	fm.seq++
	p := bytes.Repeat([]byte{fm.seq}, int(n))
	for i := 0; i < len(p); i += 512 {
		p[i] = byte(core)
	}
	if err := fm.env.Cores[core].WriteAt(p, off, rapid.Bool().Draw(t, "fua")); err != nil {
		t.Fatalf("write core %d at %d len %d: %v", core, off, n, err)
	}
	copy(fm.want[core][off:], p)
}

// checkVolume reads all of core's volume and compares it with the model.
func (fm *flushModel) checkVolume(t *rapid.T, core int, when string) {
	got := make([]byte, fm.coreBytes)
	if err := fm.env.Cores[core].ReadAt(got, 0); err != nil {
		t.Fatalf("%s: read core %d: %v", when, core, err)
	}
	if !bytes.Equal(got, fm.want[core]) {
		t.Fatalf("%s: volume %d differs from the model: %s", when, core, modelDiff(got, fm.want[core]))
	}
}

func (fm *flushModel) flush(t *rapid.T) {
	c := fm.env.Cache
	var co *ocf.Core
	flushed := fm.env.Cores
	if one := rapid.IntRange(-1, len(fm.want)-1).Draw(t, "flushCore"); one >= 0 {
		co, flushed = fm.env.Cores[one], fm.env.Cores[one:one+1]
	}
	wt := rapid.Bool().Draw(t, "writeThrough")
	// Cancel before the flush begins (0), at the nth progress call (the
	// first comes before any batch), or never (-1).
	cancelAfter := rapid.IntRange(-1, 4).Draw(t, "cancelAfter")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cancelAfter == 0 {
		cancel()
	}
	calls := 0
	opts := ocf.FlushOptions{WriteThrough: wt, Progress: func(done, total int) {
		calls++
		if done > total || done < 0 || (done == 0) != (calls == 1) {
			t.Fatalf("flush progress %d of %d", done, total)
		}
		if calls > c.NumLines()+2 {
			t.Fatalf("flush still running after %d batches of a cache of %d lines", calls, c.NumLines())
		}
		for _, h := range flushed {
			if wt != h.WriteThroughHeld() {
				t.Fatalf("flush with write-through %v: core %d held %v", wt, h.ID(), h.WriteThroughHeld())
			}
		}
		for range rapid.IntRange(0, 3).Draw(t, "writesBetweenBatches") {
			fm.write(t)
		}
		if calls == cancelAfter {
			cancel()
		}
	}}
	ocf.SetFlushBatchLines(&opts, rapid.IntRange(1, 3).Draw(t, "batchLines"))
	err := c.Flush(ctx, co, opts)
	cancelled := ctx.Err() != nil
	switch {
	case err != nil && !(cancelled && errors.Is(err, ocf.ErrFlushCancelled)):
		t.Fatalf("flush (write-through %v, cancelled %v): %v", wt, cancelled, err)
	case err == nil && cancelAfter == 0:
		t.Fatal("a flush cancelled before it began succeeded")
	}
	for _, h := range fm.env.Cores {
		if h.WriteThroughHeld() {
			t.Fatalf("core %d still held write-through after the flush", h.ID())
		}
	}
	if errs := c.Check(); len(errs) > 0 {
		t.Fatalf("check after the flush: %v", errs)
	}
	for i := range fm.want {
		fm.checkVolume(t, i, fmt.Sprintf("after a flush (write-through %v, cancelled %v)", wt, cancelled))
	}
	if !wt || err != nil {
		return
	}
	for _, h := range flushed {
		if n := h.Stats().Usage.Dirty; n != 0 {
			t.Fatalf("core %d: %d dirty 4 KiB blocks after a write-through flush", h.ID(), n)
		}
		got := make([]byte, fm.coreBytes)
		if err := fm.env.CoreDevs[h.ID()].ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, fm.want[h.ID()]) {
			t.Fatalf("core %d device differs from the model after a write-through flush: %s", h.ID(), modelDiff(got, fm.want[h.ID()]))
		}
	}
}

// modelDiff says where got first differs from want.
func modelDiff(got, want []byte) string {
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at byte %d (sector %d): got %#x want %#x", i, i/512, got[i], want[i])
		}
	}
	return "equal"
}
