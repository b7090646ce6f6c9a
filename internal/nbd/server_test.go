package nbd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/nbdproto"
)

func TestAddExportValidates(t *testing.T) {
	s := mustNewServer(t, nil)
	dev := bdevtest.NewMalloc(t, "m0", 64)
	odd, err := malloc.New("odd", uuid.Nil, 1536, 64) // not a power of two
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		e    Export
	}{
		{"no device", Export{Name: "x"}},
		{"NUL in name", Export{Name: "a\x00b", Device: dev}},
		{"long name", Export{Name: strings.Repeat("n", nbdproto.MaxStringLen+1), Device: dev}},
		{"long description", Export{Name: "x", Description: strings.Repeat("d", nbdproto.MaxStringLen+1), Device: dev}},
		{"block size not a power of two", Export{Name: "x", Device: odd}},
		{"preferred not a power of two", Export{Name: "x", Device: dev, PreferredBlockSize: 3000}},
		{"preferred below block size", Export{Name: "x", Device: dev, PreferredBlockSize: 256}},
		{"preferred above maximum", Export{Name: "x", Device: dev, PreferredBlockSize: 64 << 20}},
	} {
		if err := s.AddExport(tc.e); !errors.Is(err, ErrInvalidExport) || !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%s: got %v, want ErrInvalidExport", tc.name, err)
		}
	}
	if len(s.Exports()) != 0 {
		t.Fatal("an invalid export was added")
	}

	for _, name := range []string{"b", "a", ""} {
		if err := s.AddExport(Export{Name: name, Device: dev, PreferredBlockSize: 1 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	err = s.AddExport(Export{Name: "a", Device: dev})
	if !errors.Is(err, ErrExportExists) || !errors.Is(err, bdev.ErrExists) {
		t.Fatalf("duplicate: got %v", err)
	}
	var names []string
	for _, e := range s.Exports() {
		names = append(names, e.Name)
		if e.Device != dev || e.PreferredBlockSize != 1<<20 {
			t.Fatalf("export %q came back changed: %+v", e.Name, e)
		}
	}
	if strings.Join(names, ",") != ",a,b" {
		t.Fatalf("exports %q, want sorted \"\", a, b", names)
	}
	if err := s.RemoveExport("nope"); !errors.Is(err, ErrNoSuchExport) || !errors.Is(err, bdev.ErrNoSuchDevice) {
		t.Fatalf("remove unknown: %v", err)
	}
	if err := s.RemoveExport("a"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddExport(Export{Name: "a", Device: dev}); err != nil {
		t.Fatalf("re-adding a removed name: %v", err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.AddExport(Export{Name: "c", Device: dev}); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("AddExport after Shutdown: %v", err)
	}
}

// RemoveExport answers what is in flight, then disconnects that export's
// clients, and leaves other exports alone.
func TestRemoveExportDisconnectsClients(t *testing.T) {
	a, release := blockingDevice(t, "ma", 64, "", 4096)
	ts := startServer(t, Export{Name: "a", Device: a}, Export{Name: "b", Device: bdevtest.NewMalloc(t, "mb", 64)})
	busy := ts.dial(t, nbdclient.Options{Export: "a", StructuredReplies: true})
	idle := ts.dial(t, nbdclient.Options{Export: "a"})
	other := ts.dial(t, nbdclient.Options{Export: "b"})
	handshaking := ts.handshake(t, stdFlags) // not attached to any export

	inflight := make(chan error, 1)
	go func() { inflight <- busy.ReadAt(make([]byte, 512), 4096) }()
	for a.inflight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	removed := make(chan error, 1)
	go func() { removed <- ts.RemoveExport("a") }()
	waitDone(t, idle)
	select {
	case err := <-removed:
		t.Fatalf("RemoveExport returned (%v) with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	// New sessions cannot open the export any more.
	if _, err := handshaking.Go("a"); optErrType(t, err) != nbdclient.RepErrUnknown {
		t.Fatalf("GO on a removed export: %v", err)
	}
	close(release)
	if err := <-inflight; err != nil {
		t.Fatalf("in-flight read was not answered: %v", err)
	}
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	waitDone(t, busy)
	if err := other.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatalf("client of another export: %v", err)
	}
	if _, err := handshaking.Go("b"); err != nil {
		t.Fatalf("handshake in progress: %v", err)
	}
}

// mustNewServer is NewServer with default options.
func mustNewServer(t testing.TB, log *slog.Logger) *Server {
	t.Helper()
	s, err := NewServer(log, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newBareServer serves exports on TCP without startServer's cleanup, for
// tests that shut down themselves.
func newBareServer(t *testing.T, exports ...Export) (*Server, string, chan error) {
	t.Helper()
	s := mustNewServer(t, nil)
	for _, e := range exports {
		if err := s.AddExport(e); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	return s, l.Addr().String(), served
}

func TestShutdownDrainsThenFlushes(t *testing.T) {
	dev, release := blockingDevice(t, "m0", 64, "write", -1)
	other := &hookDevice{Device: bdevtest.NewMalloc(t, "m1", 64)}
	s, addr, served := newBareServer(t, Export{Name: "disk", Device: dev}, Export{Name: "other", Device: other})
	c, err := nbdclient.Dial("tcp", addr, nbdclient.Options{Export: "disk"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	werr := make(chan error, 1)
	go func() { werr <- c.WriteAt(make([]byte, 512), 0, 0) }()
	for dev.inflight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := nbdclient.Dial("tcp", addr, nbdclient.Options{Export: "disk"}); err == nil {
		t.Fatal("dial succeeded after Shutdown closed the listener")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a write in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	if dev.flushes.Load() != 0 {
		t.Fatal("flushed before the in-flight write finished")
	}
	close(release)
	if err := <-werr; err != nil {
		t.Fatalf("in-flight write: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitDone(t, c)
	if dev.flushes.Load() != 1 || other.flushes.Load() != 1 {
		t.Fatalf("flushes: %d and %d, want one per export", dev.flushes.Load(), other.flushes.Load())
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := s.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

func TestShutdownGivesUpAtDeadline(t *testing.T) {
	dev, release := blockingDevice(t, "m0", 64, "read", -1)
	defer close(release)
	s, addr, served := newBareServer(t, Export{Name: "disk", Device: dev})
	c, err := nbdclient.Dial("tcp", addr, nbdclient.Options{Export: "disk"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go c.ReadAt(make([]byte, 512), 0)
	for dev.inflight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want the deadline", err)
	}
	waitDone(t, c) // closed by force
	if dev.flushes.Load() != 1 {
		t.Fatal("device not flushed after a forced shutdown")
	}
	<-served
}

// A client that stops reading replies is cut off after the reply timeout,
// so RemoveExport does not hang on it.
func TestStuckClientIsCutOff(t *testing.T) {
	var reads atomic.Int64
	dev := &hookDevice{Device: bdevtest.NewMalloc(t, "m0", 65536)}
	dev.hook = func(string, int64, int64) error { reads.Add(1); return nil }
	ts := startServerWith(t, func(s *Server) { s.replyTimeout = 200 * time.Millisecond }, Export{Name: "disk", Device: dev})
	n := ts.handshake(t, stdFlags)
	if _, err := n.Option(nbdclient.OptGo, nbdclient.InfoData("disk")); err != nil {
		t.Fatal(err)
	}
	// Ask for far more data than socket buffers hold, and read none of it.
	for i := range 64 {
		if _, err := n.Conn().Write(requestBytes(0, 0, uint64(i), 0, 1<<20)); err != nil {
			t.Fatal(err)
		}
	}
	for reads.Load() < 64 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if err := ts.RemoveExport("disk"); err != nil {
		t.Fatal(err)
	}
	// The reply timeout (200ms) cut it off, not the default of a minute.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("RemoveExport took %v", d)
	}
}

func TestServeOnUnixSocket(t *testing.T) {
	ts := startServer(t, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	c, err := nbdclient.Dial("unix", ts.unixPath, nbdclient.Options{Export: "disk", StructuredReplies: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteAt(make([]byte, 4096), 0, nbdclient.CmdFlagFUA); err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
}
