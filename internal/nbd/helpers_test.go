package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/nbd/nbdclient"
)

// testLogger sends server logs to t.Log and remembers errors (panics) and
// every line at Info and above.
type testLogger struct {
	t           testing.TB
	mu          sync.Mutex
	errors      []string
	lines       []string    // message and attributes, as key=value
	allowErrors atomic.Bool // the test provokes logged errors (panics) on purpose
}

func (l *testLogger) Enabled(context.Context, slog.Level) bool { return true }
func (l *testLogger) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	l.mu.Lock()
	if r.Level >= slog.LevelError {
		l.errors = append(l.errors, r.Message)
	}
	if r.Level >= slog.LevelInfo {
		l.lines = append(l.lines, r.Message+b.String())
	}
	l.mu.Unlock()
	if testing.Verbose() {
		l.t.Logf("%s %s%s", r.Level, r.Message, b.String())
	}
	return nil
}

// find returns the lines logged so far that contain every one of parts.
func (l *testLogger) find(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
next:
	for _, line := range l.lines {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// waitFind waits up to ten seconds for a line containing every one of
// parts and returns the lines find returns then: a connection's last line
// is logged after its client has seen the connection close.
func (l *testLogger) waitFind(parts ...string) []string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := l.find(parts...)
		if len(got) > 0 || time.Now().After(deadline) {
			return got
		}
		time.Sleep(time.Millisecond)
	}
}

func (l *testLogger) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *testLogger) WithGroup(string) slog.Handler      { return l }

func (l *testLogger) errorCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.errors)
}

// testServer is a Server listening on TCP loopback and a Unix socket.
type testServer struct {
	*Server
	log      *testLogger
	tcpAddr  string
	unixPath string
	served   chan error // one result per listener
}

// startServer serves the exports on 127.0.0.1:0 and a Unix socket; it is
// shut down at cleanup, which also checks that no connection panicked.
func startServer(t testing.TB, exports ...Export) *testServer {
	t.Helper()
	return startServerWith(t, nil, exports...)
}

// startServerWith is startServer with a hook to adjust the Server before it
// serves.
func startServerWith(t testing.TB, adjust func(*Server), exports ...Export) *testServer {
	t.Helper()
	return startServerOpts(t, Options{}, adjust, exports...)
}

// startServerOpts is startServerWith with Options.
func startServerOpts(t testing.TB, o Options, adjust func(*Server), exports ...Export) *testServer {
	t.Helper()
	tl := &testLogger{t: t}
	s, err := NewServer(slog.New(tl), o)
	if err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(s)
	}
	for _, e := range exports {
		if err := s.AddExport(e); err != nil {
			t.Fatal(err)
		}
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir paths can exceed the 108-byte limit of socket paths.
	dir, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	unix, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, log: tl, tcpAddr: tcp.Addr().String(), unixPath: sock, served: make(chan error, 2)}
	go func() { ts.served <- s.Serve(tcp) }()
	go func() { ts.served <- s.Serve(unix) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range 2 {
			if err := <-ts.served; !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		}
		if n := tl.errorCount(); n != 0 && !tl.allowErrors.Load() {
			t.Errorf("server logged %d errors: %v", n, tl.errors)
		}
	})
	return ts
}

var _ bdev.Device = (*malloc.Device)(nil)

// dial opens a client on the TCP listener, closed at cleanup.
func (ts *testServer) dial(t testing.TB, o nbdclient.Options) *nbdclient.Client {
	t.Helper()
	c, err := nbdclient.Dial("tcp", ts.tcpAddr, o)
	if err != nil {
		t.Fatalf("dial %+v: %v", o, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// handshake opens a raw connection and answers the greeting.
func (ts *testServer) handshake(t testing.TB, clientFlags uint32) *nbdclient.Negotiator {
	t.Helper()
	nc, err := net.Dial("tcp", ts.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	n, err := nbdclient.Handshake(nc, clientFlags)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitClosed fails unless the server closes nc within a few seconds.
func waitClosed(t testing.TB, nc net.Conn) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		_, err := nc.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("server did not close the connection")
		}
		return
	}
}

// waitDone fails unless the client's connection ends within a few seconds.
func waitDone(t testing.TB, c *nbdclient.Client) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open")
	}
}

const stdFlags = nbdclient.ClientFixedNewstyle | nbdclient.ClientNoZeroes
