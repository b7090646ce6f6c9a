package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/nbdremote"
	"blockcache/internal/nbd"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
	"blockcache/internal/testutil"
)

// volatileDisk is a disk with a write cache, as behind qemu-nbd
// --cache=writeback: a write without FUA is durable only after a later
// Flush, and crash drops what is not. Chosen requests can be held, to
// crash the disk while they are in progress; one that was held across a
// crash does nothing and fails, as its server is gone.
type volatileDisk struct {
	info bdev.Info
	mu   struct {
		sync.Mutex
		live, durable []byte
		crashes       int
		holds         []*diskHold
	}
}

// diskHold holds the next request it matches: a flush (off -1) or a write
// at off.
type diskHold struct {
	off              int64
	entered, release chan struct{}
}

func newVolatileDisk(size int) *volatileDisk {
	d := &volatileDisk{info: bdev.Info{Name: "disk", BlockSize: 512, NumBlocks: uint64(size / 512)}}
	d.mu.live, d.mu.durable = make([]byte, size), make([]byte, size)
	return d
}

func (d *volatileDisk) Info() bdev.Info { return d.info }
func (d *volatileDisk) Close() error    { return nil }

func (d *volatileDisk) ReadAt(p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(p, d.mu.live[off:])
	return nil
}

func (d *volatileDisk) WriteAt(p []byte, off int64, fua bool) error {
	crashes := d.wait(off)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.crashes != crashes {
		return fmt.Errorf("crashed during the write: %w", syscall.EIO)
	}
	copy(d.mu.live[off:], p)
	if fua {
		copy(d.mu.durable[off:], p)
	}
	return nil
}

// Flush makes the cache durable; a held Flush during which the disk
// crashed fails.
func (d *volatileDisk) Flush() error {
	crashes := d.wait(-1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.crashes != crashes {
		return fmt.Errorf("crashed during the flush: %w", syscall.EIO)
	}
	copy(d.mu.durable, d.mu.live)
	return nil
}

// holdNext makes the next flush (off -1) or write at off wait for
// release; entered is closed when it does.
func (d *volatileDisk) holdNext(off int64) (entered <-chan struct{}, release func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := &diskHold{off: off, entered: make(chan struct{}), release: make(chan struct{})}
	d.mu.holds = append(d.mu.holds, h)
	return h.entered, func() { close(h.release) }
}

// wait holds a request at off (-1 a flush) if a hold matches it, and
// returns the crash count it began under.
func (d *volatileDisk) wait(off int64) int {
	d.mu.Lock()
	crashes := d.mu.crashes
	var h *diskHold
	for i, x := range d.mu.holds {
		if x.off == off {
			h = x
			d.mu.holds = append(d.mu.holds[:i], d.mu.holds[i+1:]...)
			break
		}
	}
	d.mu.Unlock()
	if h != nil {
		close(h.entered)
		<-h.release
	}
	return crashes
}

// waitEntered waits up to 10 s for a hold to take a request.
func waitEntered(t *testing.T, entered <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never reached the server", what)
	}
}

func (d *volatileDisk) crash() {
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(d.mu.live, d.mu.durable)
	d.mu.crashes++
}

func (d *volatileDisk) durable() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Clone(d.mu.durable)
}

// cutter forwards Unix-socket connections to target and cuts them all at
// once, as a server killed mid-request would.
type cutter struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutter(t *testing.T, target string) *cutter {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "cut.sock"))
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln}
	t.Cleanup(func() { ln.Close(); c.cut() })
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("unix", target)
			if err != nil {
				a.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, a, b)
			c.mu.Unlock()
			go func() { io.Copy(b, a); b.Close() }()
			go func() { io.Copy(a, b); a.Close() }()
		}
	}()
	return c
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.conns {
		x.Close()
	}
	c.conns = nil
}

// remoteCore serves disk over NBD behind a cutter and opens an NBD client
// device on it.
func remoteCore(t *testing.T, disk *volatileDisk) (*nbdremote.Device, *cutter) {
	srv, err := nbd.NewServer(slog.New(slog.DiscardHandler), nbd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddExport(nbd.Export{Name: "core", Device: disk}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "nbd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	cut := newCutter(t, l.Addr().String())
	o := nbdremote.DefaultOptions()
	o.ReconnectDelay = 20 * time.Millisecond
	o.IOTimeout = 5 * time.Second
	o.OnEvent = func(msg string, err error) { t.Logf("%s: %v", msg, err) }
	dev, err := nbdremote.Open("Remote0", nbdremote.URI{Network: "unix", Address: cut.ln.Addr().String(), Export: "core"}, uuid.Nil, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev, cut
}

// crashServer kills the core's server: the disk loses what it had not
// made durable and every connection to it is cut.
func crashServer(disk *volatileDisk, cut *cutter) {
	disk.crash()
	cut.cut()
}

// flushInBackground starts the cache's flush of vol; its result arrives on
// the channel.
func flushInBackground(env *ocftest.Env, vol *ocf.Core) <-chan error {
	flushed := make(chan error, 1)
	go func() { flushed <- env.Cache.FlushDirty(vol, nil) }()
	return flushed
}

// dirtyVolume builds a wb cache on remote and makes 256 dirty lines, in
// more than one cleaning batch; it returns the volume and the model.
func dirtyVolume(t *testing.T, remote bdev.Device, size int) (*ocftest.Env, []byte) {
	env := ocftest.New(t, ocftest.Options{Lines: 512, Mode: ocf.ModeWB, CoreBytes: int64(size), SeqCutoff: ocf.CutoffNever{},
		WrapCore: func(int, bdev.Device) bdev.Device { return remote }})
	model := make([]byte, size)
	for i := range 64 {
		off := int64(i) * 48 << 10
		p := bdevtest.Pattern(uint64(i), 16<<10)
		bdevtest.MustWrite(t, env.Cores[0], p, off, false)
		copy(model[off:], p)
	}
	if st := env.Cores[0].Stats(); st.Usage.Dirty == 0 {
		t.Fatalf("no dirty lines after wb writes: %+v", st.Usage)
	}
	return env, model
}

// checkConverged checks that vol has nothing dirty and that the server's
// durable data and the volume equal model.
func checkConverged(t *testing.T, vol *ocf.Core, disk *volatileDisk, model []byte) {
	t.Helper()
	if st := vol.Stats(); st.Usage.Dirty != 0 {
		t.Fatalf("%d lines dirty after a successful flush", st.Usage.Dirty)
	}
	if got := disk.durable(); !bytes.Equal(got, model) {
		t.Fatalf("the server's durable data differs from the model at %d", testutil.FirstDiff(got, model))
	}
	if got := bdevtest.MustRead(t, vol, 0, len(model)); !bytes.Equal(got, model) {
		t.Fatalf("the volume differs from the model at %d", testutil.FirstDiff(got, model))
	}
}

// In wb, the core's NBD server, with a write cache, is killed while the
// cache's flush flushes the core after writing dirty lines back, and comes
// back at once with only what it had made durable. The batch's flush
// fails with the loss, the batch writes its lines again and flushes, and
// the cache's flush succeeds with the server's durable data equal to
// every write.
func TestRemoteCoreLostWriteBack(t *testing.T) {
	const size = 4 << 20
	disk := newVolatileDisk(size)
	remote, cut := remoteCore(t, disk)
	env, model := dirtyVolume(t, remote, size)
	vol := env.Cores[0]

	entered, release := disk.holdNext(-1)
	flushed := flushInBackground(env, vol)
	waitEntered(t, entered, "the core flush of the cache's flush")
	disk.crash()
	if bytes.Equal(disk.durable(), model) {
		t.Fatal("the crash lost nothing: the test models nothing")
	}
	cut.cut()
	release()
	if err := <-flushed; err != nil {
		t.Fatalf("cache flush across the server's crash: %v", err)
	}
	if n := vol.Counters().CoreWriteErrors; n != 1 {
		t.Fatalf("%d core write errors, want 1: the batch's flush reporting the loss", n)
	}
	checkConverged(t, vol, disk, model)
}

// As TestRemoteCoreLostWriteBack, but the server is killed again during
// the batch's second flush, after it wrote the lines again: the cache's
// flush fails with EIO, the lines stay dirty, and the next flush writes
// them back.
func TestRemoteCoreLostWriteBackTwice(t *testing.T) {
	const size = 4 << 20
	disk := newVolatileDisk(size)
	remote, cut := remoteCore(t, disk)
	env, model := dirtyVolume(t, remote, size)
	vol := env.Cores[0]

	first, releaseFirst := disk.holdNext(-1)
	flushed := flushInBackground(env, vol)
	waitEntered(t, first, "the core flush of the cache's flush")
	resent, releaseResent := disk.holdNext(-1)
	retry, releaseRetry := disk.holdNext(-1)
	crashServer(disk, cut)
	releaseFirst()
	waitEntered(t, resent, "the flush resent after the reconnect")
	releaseResent()
	waitEntered(t, retry, "the flush after the batch wrote its lines again")
	crashServer(disk, cut)
	releaseRetry()
	err := <-flushed
	if !errors.Is(err, nbdremote.ErrWritesLost) || !errors.Is(err, bdev.ErrWritesLost) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("cache flush across two crashes = %v, want ErrWritesLost (EIO)", err)
	}
	if st := vol.Stats(); st.Usage.Dirty == 0 {
		t.Fatal("lines the server lost were marked clean")
	}
	if err := env.Cache.FlushDirty(vol, nil); err != nil {
		t.Fatalf("second cache flush: %v", err)
	}
	checkConverged(t, vol, disk, model)
}

// A cleaning batch's writes straddle the core server's crash: most were
// acknowledged before it, the last is sent after the reconnect. Another
// caller's flush of the core reports the loss first; the batch's own flush
// must still fail (bdev.LossReporter), or the lines the server lost would
// be marked clean. It writes them again and the cache's flush succeeds.
func TestRemoteCoreLostWriteBackReportedElsewhere(t *testing.T) {
	const size = 1 << 20
	disk := newVolatileDisk(size)
	remote, cut := remoteCore(t, disk)
	held := &heldWrite{Device: remote, off: 0, entered: make(chan struct{}), release: make(chan struct{})}
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWB, CoreBytes: size, SeqCutoff: ocf.CutoffNever{},
		WrapCore: func(int, bdev.Device) bdev.Device { return held }})
	vol := env.Cores[0]
	model := make([]byte, size)
	const lines = 16
	p := bdevtest.Pattern(2, lines*4096)
	bdevtest.MustWrite(t, vol, p, 0, false)
	copy(model, p)

	flushed := flushInBackground(env, vol)
	waitEntered(t, held.entered, "the batch's write at 0")
	for end := time.Now().Add(10 * time.Second); vol.Counters().CleanedBytes < (lines-1)*4096; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the batch wrote back %d bytes, want the %d of its other lines", vol.Counters().CleanedBytes, (lines-1)*4096)
		}
	}
	crashServer(disk, cut)
	if err := remote.Flush(); !errors.Is(err, nbdremote.ErrWritesLost) {
		t.Fatalf("another caller's flush after the crash = %v, want ErrWritesLost", err)
	}
	close(held.release)
	if err := <-flushed; err != nil {
		t.Fatalf("cache flush whose writes straddle the crash: %v", err)
	}
	if n := vol.Counters().CoreWriteErrors; n != 1 {
		t.Fatalf("%d core write errors, want 1: the batch's flush reporting the loss", n)
	}
	checkConverged(t, vol, disk, model)
}

// heldWrite holds the first write at off before the NBD client sends it.
type heldWrite struct {
	*nbdremote.Device
	off              int64
	once             sync.Once
	entered, release chan struct{}
}

func (h *heldWrite) WriteAt(p []byte, off int64, fua bool) error {
	if off == h.off {
		h.once.Do(func() { close(h.entered); <-h.release })
	}
	return h.Device.WriteAt(p, off, fua)
}

// In wt, writes reach the core's server, with a write cache, and it is
// killed before a flush: the user's flush through the volume fails with
// EIO, once; after the user writes again, it succeeds and the data is
// durable.
func TestRemoteCoreLostWriteThroughFlush(t *testing.T) {
	const size = 1 << 20
	disk := newVolatileDisk(size)
	remote, cut := remoteCore(t, disk)
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWT, CoreBytes: size, SeqCutoff: ocf.CutoffNever{},
		WrapCore: func(int, bdev.Device) bdev.Device { return remote }})
	vol := env.Cores[0]
	p := bdevtest.Pattern(1, 64<<10)
	bdevtest.MustWrite(t, vol, p, 0, false)
	crashServer(disk, cut)
	if err := vol.Flush(); !errors.Is(err, nbdremote.ErrWritesLost) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("flush after the server's crash = %v, want ErrWritesLost (EIO)", err)
	}
	bdevtest.MustWrite(t, vol, p, 0, false)
	if err := vol.Flush(); err != nil {
		t.Fatalf("flush after writing again: %v", err)
	}
	if got := disk.durable(); !bytes.Equal(got[:len(p)], p) {
		t.Fatal("data not durable after a successful flush")
	}
}
