package nbd

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"blockcache/internal/nbdproto"
	"blockcache/internal/testutil"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// replyBatch returns the buffers of n replies, each a 16-byte header and
// dataLen bytes of data (none if 0), and their concatenation.
func replyBatch(n, dataLen int) (net.Buffers, []byte) {
	var bufs net.Buffers
	for i := range n {
		bufs = append(bufs, bytes.Repeat([]byte{byte(i)}, nbdproto.SimpleReplyLen))
		if dataLen > 0 {
			bufs = append(bufs, bytes.Repeat([]byte{byte(i) ^ 0xff}, dataLen))
		}
	}
	return bufs, bytes.Join(bufs, nil)
}

// readN reads n bytes from r in the background.
func readN(r io.Reader, n int) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, n)
		k, _ := io.ReadFull(r, b)
		got <- b[:k]
	}()
	return got
}

// threadWriteSyscalls is the calling thread's count of write system calls
// (write, writev, ...); the caller locks its goroutine to the thread.
func threadWriteSyscalls(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/thread-self/io")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("/proc/thread-self/io has no syscw line")
	return 0
}

// upgradableTestConn is a connection of a server in TLS mode on, over raw.
func upgradableTestConn(t *testing.T, raw net.Conn) (*conn, *upgradableConn) {
	t.Helper()
	u := &upgradableConn{raw: raw}
	return newConn(mustNewServer(t, nil), u), u
}

// TestPlainRepliesUnderTLSOnOneWritev: a client served in plain text by a
// server in TLS mode on gets a batch of replies in one writev, as without
// TLS, though its connection is an upgradableConn.
func TestPlainRepliesUnderTLSOnOneWritev(t *testing.T) {
	srv, cli := tcpPair(t)
	c, _ := upgradableTestConn(t, srv)
	bufs, want := replyBatch(32, 512)
	got := readN(cli, len(want))

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	w0 := threadWriteSyscalls(t)
	c.wbufs = bufs
	if err := c.writeIOV(); err != nil {
		t.Fatal(err)
	}
	// Setting the write deadline may wake the runtime's poller, a write
	// to an eventfd.
	if n := threadWriteSyscalls(t) - w0; n > 2 {
		t.Fatalf("a batch of 32 replies (64 buffers) took %d write system calls, want one writev", n)
	}
	if !bytes.Equal(<-got, want) {
		t.Fatal("the client received other bytes than the batch")
	}
}

// writeCounter counts the Write calls on a connection: below a tls.Conn,
// one per TLS record.
type writeCounter struct {
	net.Conn
	n atomic.Int64
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.n.Add(1)
	return w.Conn.Write(p)
}

// TestTLSRepliesCoalesced: over TLS a batch of replies goes out in full
// records, not one record (and one system call) for each buffer.
func TestTLSRepliesCoalesced(t *testing.T) {
	srv, cli := tcpPair(t)
	ca := testutil.NewCA(t, "ca")
	cfg, err := LoadTLSConfig(ca.ServerDir(t.TempDir()), false)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DynamicRecordSizingDisabled = true // full records from the start, so the count is exact
	raw := &writeCounter{Conn: srv}
	c, u := upgradableTestConn(t, raw)
	tsrv, tcli := tls.Server(raw, cfg), tls.Client(cli, clientTLS(ca))
	done := make(chan error, 1)
	go func() { done <- tcli.Handshake() }()
	if err := tsrv.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	u.upgrade(tsrv)

	for _, tc := range []struct {
		name  string
		batch func() (net.Buffers, []byte)
	}{
		{"64 simple replies", func() (net.Buffers, []byte) { return replyBatch(64, 0) }},
		{"8 reads of 4 KiB and one of 40 KiB", func() (net.Buffers, []byte) {
			bufs, want := replyBatch(8, 4096)
			big, bigWant := replyBatch(1, 40<<10)
			return append(bufs, big...), append(want, bigWant...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bufs, want := tc.batch()
			nbufs := len(bufs)
			got := readN(tcli, len(want))
			w0 := raw.n.Load()
			c.wbufs = bufs
			if err := c.writeIOV(); err != nil {
				t.Fatal(err)
			}
			records := raw.n.Load() - w0
			// A buffer of a record's size or more is written through, which
			// may leave one record short.
			most := int64((len(want)+tlsRecordBytes-1)/tlsRecordBytes) + 1
			if records > most {
				t.Fatalf("%d bytes in %d buffers took %d records, want at most %d", len(want), nbufs, records, most)
			}
			if !bytes.Equal(<-got, want) {
				t.Fatal("the client decrypted other bytes than the batch")
			}
		})
	}
}
