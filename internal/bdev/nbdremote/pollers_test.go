package nbdremote

import (
	"net"
	"path/filepath"
	"testing"

	"blockcache/internal/poller"
)

// TestPollersFollowConnections: a device opened with Options.Pollers
// registers one check per connection, and Close removes them.
func TestPollersFollowConnections(t *testing.T) {
	s := newFakeServer(t, 1<<20)
	var set poller.Set
	o := fastOptions()
	o.Pollers = &set
	d := openFake(t, s, o)
	if set.Len() != 1 {
		t.Fatalf("%d checks for a device of one connection, want 1", set.Len())
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if set.Len() != 0 {
		t.Errorf("%d checks left after Close, want 0", set.Len())
	}
}

// TestPeekSeesWaitingBytes: the check reports bytes waiting in the socket,
// and its end, and nothing on an empty socket; it takes none of them.
func TestPeekSeesWaitingBytes(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fd, ok := socketFD(cli)
	if !ok {
		t.Fatal("no descriptor for a Unix socket")
	}
	c := &conn{nc: cli}
	if c.peek(fd) {
		t.Error("peek reports bytes on an empty socket")
	}
	srv.Write([]byte("ab"))
	for i := range 2 { // the first peek takes nothing
		if !c.peek(fd) {
			t.Errorf("peek %d misses the bytes waiting", i+1)
		}
	}
	p := make([]byte, 4)
	if n, err := cli.Read(p); err != nil || string(p[:n]) != "ab" {
		t.Fatalf("read after peeks: %q, %v; want \"ab\"", p[:n], err)
	}
	srv.Close()
	if !c.peek(fd) {
		t.Error("peek misses the end of the stream")
	}
	cli.Close()
}
