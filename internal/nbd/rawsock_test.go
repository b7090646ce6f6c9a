package nbd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"blockcache/internal/nbdproto"
	"blockcache/internal/poller"
)

// socketPair returns the two ends of a connection of network "tcp" or
// "unix": the accepted end first.
func socketPair(t *testing.T, network string) (srv, cli net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	cli, err = net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv = <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { srv.Close(); cli.Close() })
	return srv, cli
}

func TestRawSocketOnlyForNetSockets(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		srv, _ := socketPair(t, network)
		if newRawSocket(srv) == nil {
			t.Errorf("%s: no raw access to a %T", network, srv)
		}
	}
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if newRawSocket(p) != nil {
		t.Error("raw access to a net.Pipe, which has no socket")
	}
	if newRawSocket(&upgradableConn{raw: p}) != nil {
		t.Error("raw access to a connection that TLS may take over")
	}
}

// TestRawSocketRoundTrip writes more than the socket buffers hold through
// writeBuffers, in many buffers (more than one writev takes), while the
// other end reads slowly, so that writes are partial and wait for room;
// and reads through Read what the other end writes, up to its close.
func TestRawSocketRoundTrip(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			srv, cli := socketPair(t, network)
			raw := newRawSocket(srv)

			var want []byte
			var bufs net.Buffers
			for i := range 3000 {
				b := bytes.Repeat([]byte{byte(i)}, 1+i%700)
				if i%500 == 0 {
					b = make([]byte, 256<<10)
					b[0], b[len(b)-1] = byte(i), byte(i>>8)
				}
				bufs = append(bufs, b)
				want = append(want, b...)
			}
			got := make(chan []byte, 1)
			go func() {
				var all []byte
				p := make([]byte, 1000)
				for len(all) < len(want) {
					n, err := cli.Read(p)
					all = append(all, p[:n]...)
					if err != nil {
						break
					}
					time.Sleep(time.Microsecond)
				}
				got <- all
			}()
			if err := raw.writeBuffers(&bufs); err != nil {
				t.Fatal(err)
			}
			if len(bufs) != 0 {
				t.Errorf("writeBuffers left %d buffers", len(bufs))
			}
			if g := <-got; !bytes.Equal(g, want) {
				t.Fatalf("the other end read %d bytes, not the %d written, or other bytes", len(g), len(want))
			}

			msg := bytes.Repeat([]byte("request!"), 40000)
			go func() {
				cli.Write(msg)
				cli.Close()
			}()
			all, err := io.ReadAll(raw)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if !bytes.Equal(all, msg) {
				t.Fatalf("read %d bytes, not the %d sent, or other bytes", len(all), len(msg))
			}
			if n, err := raw.Read(make([]byte, 10)); n != 0 || err != io.EOF {
				t.Errorf("Read after the end: %d, %v; want 0, EOF", n, err)
			}
		})
	}
}

// TestRawSocketDeadlines: the connection's deadlines stop a Read waiting
// for data and a write waiting for room, with os.ErrDeadlineExceeded, as
// beginClose and the reply timeout rely on.
func TestRawSocketDeadlines(t *testing.T) {
	srv, _ := socketPair(t, "unix")
	raw := newRawSocket(srv)
	srv.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := raw.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read past the read deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	srv.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	bufs := net.Buffers{make([]byte, 64<<20)} // more than the socket holds; nobody reads
	if err := raw.writeBuffers(&bufs); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("write past the write deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	srv.Close()
	if _, err := raw.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read of a closed connection: %v, want net.ErrClosed", err)
	}
}

func TestConsume(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{
		{0, "ab|cde|f"}, {1, "b|cde|f"}, {2, "cde|f"}, {4, "e|f"}, {5, "f"}, {6, ""},
	} {
		bufs := net.Buffers{[]byte("ab"), []byte("cde"), []byte("f")}
		consume(&bufs, tc.n)
		got := string(bytes.Join(bufs, []byte("|")))
		if got != tc.want {
			t.Errorf("consume %d: %q, want %q", tc.n, got, tc.want)
		}
	}
}

// TestRawOnSockets: a connection on a socket reads and writes with its raw
// socket, which sees the connection's handed-off requests and runs the
// server's pollers; a connection without a socket has none.
func TestRawOnSockets(t *testing.T) {
	var set poller.Set
	srv, _ := socketPair(t, "tcp")
	s, err := NewServer(nil, Options{Pollers: &set})
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(s, srv)
	if c.raw == nil || c.src != io.Reader(c.raw) {
		t.Fatal("a TCP connection does not read with its raw socket")
	}
	if c.raw.handedOff != &s.handedOff || c.raw.pollers != &set {
		t.Error("the raw socket does not see the server's handed-off count or pollers")
	}
	p, q := net.Pipe()
	defer q.Close()
	if newConn(mustNewServer(t, nil), p).raw != nil {
		t.Error("raw calls on a net.Pipe")
	}
}

// TestReadSpin: a Read of an empty socket polls it for the spin before it
// waits in the poller (a deadline already due ends it only then), and
// data that arrives during the spin is returned, on one scheduler slot
// too, where the goroutine sending it runs only while the reader yields.
func TestReadSpin(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	srv, cli := socketPair(t, "unix")
	raw := newRawSocket(srv)
	if raw.spin != 0 {
		t.Fatalf("spin %v before the reader sets one, want 0", raw.spin)
	}

	raw.spin = 30 * time.Millisecond
	srv.SetReadDeadline(time.Now().Add(time.Millisecond))
	start := time.Now()
	_, err := raw.Read(make([]byte, 10))
	if took := time.Since(start); !errors.Is(err, os.ErrDeadlineExceeded) || took < raw.spin {
		t.Errorf("Read of an empty socket: %v after %v; want the deadline's error after the spin of %v", err, took, raw.spin)
	}

	srv.SetReadDeadline(time.Time{})
	raw.spin = time.Hour // only the data ends the spin
	go cli.Write([]byte("late"))
	p := make([]byte, 10)
	n, err := raw.Read(p)
	if err != nil || string(p[:n]) != "late" {
		t.Errorf("Read during the spin: %q, %v; want \"late\"", p[:n], err)
	}
}

// TestOnlyHeaderReadsPoll: the reader polls while it reads a request
// header and not after, so that a WRITE's payload is waited for in the
// poller; after a large WRITE the header is read without polling too.
func TestOnlyHeaderReadsPoll(t *testing.T) {
	srv, cli := socketPair(t, "tcp")
	c := newConn(mustNewServer(t, nil), srv)
	var seen []time.Duration
	c.src = readerFunc(func(p []byte) (int, error) {
		seen = append(seen, c.raw.spin)
		return c.raw.Read(p)
	})
	c.br.Reset(c.src)
	hdr := make([]byte, nbdproto.RequestLen)
	cli.Write(hdr)
	if err := c.readHeader(); err != nil {
		t.Fatal(err)
	}
	cli.Write(hdr)
	c.largeWrite = true
	if err := c.readHeader(); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[0] != readSpin || seen[1] != 0 {
		t.Errorf("polling of the two header reads: %v, want [%v 0]", seen, readSpin)
	}
	if c.raw.spin != 0 {
		t.Errorf("polling %v after the header read, want none", c.raw.spin)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestSpinLetsNetpollRun: with a handed-off request in flight, a reader
// polling an empty socket on the one scheduler slot still lets a goroutine
// woken through the runtime's network poller run (here one reading another
// socket, which then sends the data the reader waits for) well within the
// 10 ms after which the runtime's monitor polls the network: a reader that
// only yielded (Gosched) would keep it waiting that long, as the scheduler
// never found its run queue empty. The median of 15 relays bounds it, so
// that a test machine's hiccup does not fail it.
func TestSpinLetsNetpollRun(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	srv, cli := socketPair(t, "unix")
	raw := newRawSocket(srv)
	raw.handedOff = new(atomic.Int32)
	raw.handedOff.Store(1)
	raw.spin = 5 * time.Second

	// The relay reads b's other end (waiting in the poller) and answers
	// on cli; a timer, which the scheduler checks on every switch, starts
	// it by writing to b.
	a, b := socketPair(t, "unix")
	go func() {
		var p [1]byte
		for {
			if _, err := a.Read(p[:]); err != nil {
				return
			}
			cli.Write([]byte("relayed"))
		}
	}()
	var lat []time.Duration
	for range 15 {
		var sent atomic.Int64
		time.AfterFunc(2*time.Millisecond, func() {
			sent.Store(time.Now().UnixNano())
			b.Write([]byte("x"))
		})
		p := make([]byte, 16)
		n, err := raw.Read(p)
		if err != nil || string(p[:n]) != "relayed" {
			t.Fatalf("Read: %q, %v; want \"relayed\"", p[:n], err)
		}
		lat = append(lat, time.Duration(time.Now().UnixNano()-sent.Load()))
	}
	slices.Sort(lat)
	if med := lat[len(lat)/2]; med > netpollEvery+4*time.Millisecond {
		t.Errorf("relays took %v (median %v): the spin kept the network poller from running", lat, med)
	}
}

// TestSpinRunsPollers: a reader polling an empty socket runs the pollers
// between its tries, with or without handed-off requests in flight.
func TestSpinRunsPollers(t *testing.T) {
	for _, handedOff := range []int32{0, 1} {
		srv, cli := socketPair(t, "unix")
		raw := newRawSocket(srv)
		raw.handedOff = new(atomic.Int32)
		raw.handedOff.Store(handedOff)
		raw.polled = time.Now().Add(time.Hour) // no wait in the poller is due
		raw.spin = 5 * time.Second
		var set poller.Set
		raw.pollers = &set
		calls := 0
		set.Add(func() bool {
			calls++
			if calls == 3 {
				cli.Write([]byte("done"))
			}
			return false
		})
		p := make([]byte, 16)
		n, err := raw.Read(p)
		if err != nil || string(p[:n]) != "done" {
			t.Fatalf("handed off %d: Read %q, %v; want \"done\"", handedOff, p[:n], err)
		}
		if calls < 3 {
			t.Errorf("handed off %d: pollers ran %d times, want at least 3", handedOff, calls)
		}
	}
}

// TestParkSeesDataAlreadyArrived: a reader that stops polling to let the
// network poller run (a check reported completions waiting there) returns
// data that reached the socket after its last empty read at once. A reader
// that slept on a short timer instead could miss it: the poller's event for
// the socket, with nobody waiting on the socket, wakes nobody, and unless
// the timer is due by then the runtime sleeps in epoll for a millisecond.
func TestParkSeesDataAlreadyArrived(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	srv, cli := socketPair(t, "unix")
	raw := newRawSocket(srv)
	raw.spin = 5 * time.Second
	var set poller.Set
	raw.pollers = &set
	arm := false
	set.Add(func() bool {
		if !arm {
			return false
		}
		arm = false
		cli.Write([]byte("x")) // after the empty read, before the wait
		return true
	})
	var took []time.Duration
	p := make([]byte, 16)
	for range 15 {
		arm = true
		start := time.Now()
		n, err := raw.Read(p)
		if err != nil || string(p[:n]) != "x" {
			t.Fatalf("Read: %q, %v; want \"x\"", p[:n], err)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	if med := took[len(took)/2]; med > 500*time.Microsecond {
		t.Errorf("reads took %v (median %v): data already in the socket waited", took, med)
	}
}
