package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/nbdproto"
	"blockcache/internal/testutil"
)

// tlsSessionOn opens a TLS session on export "disk" of ts in transmission,
// returning the TLS connection and the TCP connection below it.
func tlsSessionOn(t *testing.T, ts *testServer, cfg *tls.Config) (tc, raw net.Conn) {
	t.Helper()
	n := ts.handshake(t, stdFlags)
	if err := n.StartTLS(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Option(nbdclient.OptGo, nbdclient.InfoData("disk")); err != nil {
		t.Fatal(err)
	}
	return n.Conn(), n.Conn().(*tls.Conn).NetConn()
}

// pipeTLSSession serves one connection of s over a net.Pipe, whose writes
// block until the other end reads, and brings it to transmission on
// export "disk" over TLS. It returns the client's TLS connection and the
// server's conn.
func pipeTLSSession(t *testing.T, s *Server, cfg *tls.Config) (net.Conn, *conn) {
	t.Helper()
	cli, srv := net.Pipe()
	t.Cleanup(func() { cli.Close() })
	c, err := s.admit(srv)
	if err != nil {
		t.Fatal(err)
	}
	go c.serve()
	n, err := nbdclient.Handshake(cli, stdFlags)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.StartTLS(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Option(nbdclient.OptGo, nbdclient.InfoData("disk")); err != nil {
		t.Fatal(err)
	}
	return n.Conn(), c
}

// TestTLSCloseNotHeldByStuckClient: the connection of a TLS client that
// stops reading is closed at once, not after a close-notify alert that
// cannot be sent (tls.Conn waits 5 s for it): once its reply times out,
// and after NBD_CMD_DISC, where the alert is sent but not waited for long.
// The client's end is a net.Pipe, never writable while it does not read.
func TestTLSCloseNotHeldByStuckClient(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	cfg, err := LoadTLSConfig(ca.ServerDir(t.TempDir()), false)
	if err != nil {
		t.Fatal(err)
	}
	const replyTimeout = 200 * time.Millisecond
	for _, tc := range []struct {
		name    string
		request []byte
	}{
		{"reply timed out", requestBytes(uint16(nbdproto.CmdRead), 0, 1, 0, 4096)},
		{"NBD_CMD_DISC", requestBytes(uint16(nbdproto.CmdDisc), 0, 1, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewServer(nil, Options{TLS: TLSRequire, TLSConfig: cfg})
			if err != nil {
				t.Fatal(err)
			}
			s.replyTimeout = replyTimeout
			if err := s.AddExport(Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)}); err != nil {
				t.Fatal(err)
			}
			client, c := pipeTLSSession(t, s, clientTLS(ca))
			start := time.Now()
			if _, err := client.Write(tc.request); err != nil {
				t.Fatal(err)
			}
			// No reply is read.
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			select {
			case <-c.done:
			case <-ctx.Done():
				t.Fatalf("connection still open after %v", time.Since(start).Round(time.Millisecond))
			}
			if took := time.Since(start); took > replyTimeout+time.Second {
				t.Fatalf("the connection took %v to close, want about the reply timeout (%v) at most", took, replyTimeout)
			}
			if err := s.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTLSDisconnectSendsCloseNotify: a client that disconnects with
// NBD_CMD_DISC gets a TLS close-notify alert before the close.
func TestTLSDisconnectSendsCloseNotify(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	ts := tlsServer(t, ca, TLSRequire, false)
	cfg := clientTLS(ca)
	cfg.MaxVersion = tls.VersionTLS12 // record types in the clear
	tc, raw := tlsSessionOn(t, ts, cfg)
	if _, err := tc.Write(requestBytes(uint16(nbdproto.CmdDisc), 0, 1, 0, 0)); err != nil {
		t.Fatal(err)
	}
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	after, err := io.ReadAll(raw) // below TLS: what the server sent after the DISC
	if err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("reading until the server closes: %v", err)
	}
	const recordAlert = 21
	if len(after) < 5 || after[0] != recordAlert {
		t.Fatalf("after NBD_CMD_DISC the server sent % x, want a TLS alert record", after)
	}
}
