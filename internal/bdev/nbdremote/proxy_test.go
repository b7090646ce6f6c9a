package nbdremote

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/testutil"
)

// cutProxy forwards Unix-socket connections to a server and can cut the
// client's side of them all at once, as a network failure would, with
// requests in flight.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "proxy.sock"))
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("unix", target)
			if err != nil {
				t.Logf("proxy: %v", err)
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			// A cut closes the client's side only; the server sees an
			// orderly end of its input and its late replies are drained
			// (nbdkit 1.32 aborts when a client vanishes mid-reply).
			go func() { io.Copy(s, c); s.(*net.UnixConn).CloseWrite() }()
			go func() { io.Copy(c, s); c.Close(); io.Copy(io.Discard, s); s.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestCutsUnderLoad cuts the connection to nbdkit every few milliseconds
// while writers rewrite overlapping ranges of their own regions, one write
// after another, and readers check what they read: after the last write
// the server holds exactly the model, though many writes were resent.
func TestCutsUnderLoad(t *testing.T) {
	u := startNbdkit(t, "memory", "4M")
	p := newCutProxy(t, u.Address)
	o := fastOptions()
	o.ReconnectDelay = 5 * time.Millisecond
	o.Connections = 2
	start := time.Now()
	o.OnEvent = func(msg string, err error) { t.Logf("%v %s: %v", time.Since(start), msg, err) }
	d, err := Open("remote0", URI{Network: "unix", Address: p.ln.Addr().String()}, uuid.Nil, o)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	const workers, region = 6, 512 << 10
	model := make([]byte, workers*region)
	stop := make(chan struct{})
	var cuts sync.WaitGroup
	cuts.Add(1)
	go func() {
		defer cuts.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(20+rand.IntN(40)) * time.Millisecond):
				p.cut()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			base := w * region
			for i := range 800 {
				off := base + rng.IntN(region/4096-8)*4096
				n := (1 + rng.IntN(8)) * 4096
				if i%5 == 4 {
					got := make([]byte, n)
					if err := d.ReadAt(got, int64(off)); err != nil {
						errs <- err
						return
					}
					if i := testutil.FirstDiff(got, model[off:off+n]); i >= 0 {
						errs <- fmt.Errorf("worker %d read at %d differs at +%d", w, off, i)
						return
					}
					continue
				}
				data := bytes.Repeat([]byte{byte(w*37 + i)}, n)
				if err := d.WriteAt(data, int64(off), false); err != nil {
					errs <- err
					return
				}
				copy(model[off:], data)
			}
		}()
	}
	wg.Wait()
	close(stop)
	cuts.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// nbdkit's memory plugin advertises flush: the sessions cut with
	// acknowledged writes not flushed are reported once (durability.go),
	// though this server lost nothing.
	if err := d.Flush(); !errors.Is(err, ErrWritesLost) {
		t.Fatalf("first flush after the cuts = %v, want ErrWritesLost", err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if d.Status().Reconnects == 0 {
		t.Fatal("no connection was cut")
	}
	direct, err := Open("direct", u, uuid.Nil, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	got := make([]byte, len(model))
	if err := direct.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if i := testutil.FirstDiff(got, model); i >= 0 {
		t.Fatalf("server differs from the model at %d after %d reconnects", i, d.Status().Reconnects)
	}
	t.Logf("%d reconnects", d.Status().Reconnects)
}
