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
//
// It also makes the server finish a cut connection before it serves the
// next one, which the client cannot enforce (docs/remote.md, "Ordering
// across a reconnect"): nothing the client sent is forwarded after the
// cut, and a new connection is put through only once the server has closed
// every cut one. nbdkit closes a connection's socket only after its worker
// threads have finished every request they read from it, so from then on
// no request of a cut connection can execute after a newer one.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*proxied
	// draining holds the cut connections the server has not closed yet.
	draining []*proxied
}

// proxied is one forwarded connection: c the client's side, s the server's.
type proxied struct {
	c, s net.Conn
	mu   sync.Mutex // held while forwarding to s, so that a cut is final
	cut  bool
	// closed is closed once the server has closed s.
	closed chan struct{}
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
			p.mu.Lock()
			draining := p.draining
			p.draining = nil
			p.mu.Unlock()
			for _, x := range draining {
				<-x.closed
			}
			s, err := net.Dial("unix", target)
			if err != nil {
				t.Logf("proxy: %v", err)
				c.Close()
				continue
			}
			x := &proxied{c: c, s: s, closed: make(chan struct{})}
			p.mu.Lock()
			p.conns = append(p.conns, x)
			p.mu.Unlock()
			go x.toServer()
			go x.toClient()
		}
	}()
	return p
}

// toServer forwards the client's bytes until the cut; then the server
// sees an orderly end of its input.
func (x *proxied) toServer() {
	buf := make([]byte, 64<<10)
	for {
		n, err := x.c.Read(buf)
		x.mu.Lock()
		if n > 0 && !x.cut {
			x.s.Write(buf[:n])
		}
		x.mu.Unlock()
		if err != nil {
			break
		}
	}
	x.s.(*net.UnixConn).CloseWrite()
}

// toClient forwards the server's replies until the cut, then drains them
// (nbdkit 1.32 aborts when a client vanishes mid-reply) until the server
// closes the connection.
func (x *proxied) toClient() {
	io.Copy(x.c, x.s)
	x.c.Close()
	io.Copy(io.Discard, x.s)
	x.s.Close()
	close(x.closed)
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range p.conns {
		x.mu.Lock()
		x.cut = true
		x.mu.Unlock()
		x.c.Close()
	}
	p.draining = append(p.draining, p.conns...)
	p.conns = nil
}

// TestCutsUnderLoad cuts the connection to nbdkit every few milliseconds
// while writers rewrite overlapping ranges of their own regions, one write
// after another, and readers check what they read: after the last write
// the server holds exactly the model, though many writes were resent. The
// proxy keeps nbdkit from executing a cut connection's request after the
// next session's (cutProxy), which no client can do.
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
