package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/nbdproto"
)

// rawSession opens a connection in transmission (simple replies) on export
// "disk" and returns its socket.
func rawSession(t *testing.T, ts *testServer) net.Conn {
	t.Helper()
	n := ts.handshake(t, stdFlags)
	if _, err := n.Option(nbdclient.OptGo, nbdclient.InfoData("disk")); err != nil {
		t.Fatal(err)
	}
	return n.Conn()
}

// readSimpleReplies reads n simple replies, each followed by dataLen bytes,
// and returns the handles in the order received.
func readSimpleReplies(t *testing.T, nc net.Conn, n, dataLen int) []uint64 {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer nc.SetReadDeadline(time.Time{})
	var handles []uint64
	hdr := make([]byte, nbdproto.SimpleReplyLen)
	data := make([]byte, dataLen)
	for range n {
		if _, err := io.ReadFull(nc, hdr); err != nil {
			t.Fatalf("after %d of %d replies: %v", len(handles), n, err)
		}
		if m := binary.BigEndian.Uint32(hdr[0:4]); m != nbdproto.MagicSimpleReply {
			t.Fatalf("reply magic %#x", m)
		}
		if e := binary.BigEndian.Uint32(hdr[4:8]); e != 0 {
			t.Fatalf("errno %d", e)
		}
		if _, err := io.ReadFull(nc, data); err != nil {
			t.Fatal(err)
		}
		handles = append(handles, binary.BigEndian.Uint64(hdr[8:16]))
	}
	return handles
}

// Requests that arrive together are executed inline and their replies held
// back to go out together; they must all go out once the client sends
// nothing more, and when reading ends on a broken stream.
func TestHeldRepliesAreFlushed(t *testing.T) {
	ts := startServer(t, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 4096)})
	nc := rawSession(t, ts)

	// More requests than may be in flight at once: the reader must not
	// wait for a slot while holding back the replies that would free one.
	const n = maxInflightRequests + 100
	var burst []byte
	for i := range n {
		burst = append(burst, requestBytes(uint16(nbdproto.CmdRead), 0, uint64(i), uint64(i)*512, 512)...)
	}
	if _, err := nc.Write(burst); err != nil {
		t.Fatal(err)
	}
	if got := readSimpleReplies(t, nc, n, 512); len(got) != n {
		t.Fatalf("%d replies", len(got))
	}

	// A burst ending in a request that is rejected: the held replies go
	// out before the reader waits for more.
	burst = append(requestBytes(uint16(nbdproto.CmdRead), 0, 50, 0, 512), requestBytes(uint16(nbdproto.CmdRead), 0, 51, 1, 512)...)
	if _, err := nc.Write(burst); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, nbdproto.SimpleReplyLen)
	for got := 0; got < 2; got++ {
		if _, err := io.ReadFull(nc, hdr); err != nil {
			t.Fatalf("after %d of 2 replies: %v", got, err)
		}
		if binary.BigEndian.Uint64(hdr[8:16]) == 50 {
			if _, err := io.ReadFull(nc, make([]byte, 512)); err != nil {
				t.Fatal(err)
			}
		} else if e := binary.BigEndian.Uint32(hdr[4:8]); e != nbdproto.EINVAL {
			t.Fatalf("misaligned read: errno %d", e)
		}
	}
	nc.SetReadDeadline(time.Time{})

	// A read held back behind a rejected WRITE whose payload arrives later.
	burst = append(requestBytes(uint16(nbdproto.CmdRead), 0, 60, 0, 512), requestBytes(uint16(nbdproto.CmdWrite), 0, 61, 1, 4096)...)
	if _, err := nc.Write(burst); err != nil {
		t.Fatal(err)
	}
	if got := readSimpleReplies(t, nc, 1, 512); got[0] != 60 {
		t.Fatalf("reply to handle %d, want 60", got[0])
	}
	if _, err := nc.Write(make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(nc, hdr); err != nil {
		t.Fatal(err)
	}
	if h, e := binary.BigEndian.Uint64(hdr[8:16]), binary.BigEndian.Uint32(hdr[4:8]); h != 61 || e != nbdproto.EINVAL {
		t.Fatalf("handle %d errno %d, want 61 and EINVAL", h, e)
	}

	// WRITEs whose payloads arrive in pieces: the reader waits for each
	// payload, and must not hold replies back meanwhile.
	payload := bytes.Repeat([]byte{0x5a}, 4096)
	for i := range 8 {
		if _, err := nc.Write(append(requestBytes(uint16(nbdproto.CmdWrite), 0, uint64(100+i), uint64(i)*4096, 4096), payload[:1000]...)); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			readSimpleReplies(t, nc, 1, 0) // the previous write's reply
		}
		if _, err := nc.Write(payload[1000:]); err != nil {
			t.Fatal(err)
		}
	}
	readSimpleReplies(t, nc, 1, 0)

	// A burst ending in garbage: the replies to the valid requests still
	// go out before the server hangs up.
	burst = burst[:0]
	for i := range 10 {
		burst = append(burst, requestBytes(uint16(nbdproto.CmdRead), 0, uint64(200+i), uint64(i)*512, 512)...)
	}
	burst = append(burst, bytes.Repeat([]byte{0xee}, nbdproto.RequestLen)...)
	if _, err := nc.Write(burst); err != nil {
		t.Fatal(err)
	}
	readSimpleReplies(t, nc, 10, 512)
	waitClosed(t, nc)
}

// A request executed inline that blocks in the device does not hold up the
// requests sent after it: the watchdog passes the reading turn on.
func TestBlockedInlineRequestIsOvertaken(t *testing.T) {
	dev, release := blockingDevice(t, "m0", 4096, "read", 0)
	ts := startServer(t, Export{Name: "disk", Device: dev})
	nc := rawSession(t, ts)

	// The connection is idle and fast so far: the first request is
	// executed inline, and blocks.
	if _, err := nc.Write(requestBytes(uint16(nbdproto.CmdRead), 0, 1, 0, 512)); err != nil {
		t.Fatal(err)
	}
	for dev.inflight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	for i := range 5 {
		if _, err := nc.Write(requestBytes(uint16(nbdproto.CmdRead), 0, uint64(2+i), 4096, 512)); err != nil {
			t.Fatal(err)
		}
		if got := readSimpleReplies(t, nc, 1, 512); got[0] != uint64(2+i) {
			t.Fatalf("reply to handle %d, want %d", got[0], 2+i)
		}
	}
	// The watchdog period is a millisecond; allow for a slow machine.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("requests behind the blocked one took %v", d)
	}
	close(release)
	if got := readSimpleReplies(t, nc, 1, 512); got[0] != 1 {
		t.Fatalf("reply to handle %d, want 1", got[0])
	}
}

// On a slow device the requests of one connection run in parallel: after an
// inline request was slow, the reader passes the turn on.
func TestSlowDeviceRunsRequestsInParallel(t *testing.T) {
	dev := &hookDevice{Device: bdevtest.NewMalloc(t, "m0", 4096)}
	dev.hook = func(string, int64, int64) error {
		time.Sleep(20 * time.Millisecond)
		return nil
	}
	ts := startServer(t, Export{Name: "disk", Device: dev})
	nc := rawSession(t, ts)
	const n = 16
	var burst []byte
	for i := range n {
		burst = append(burst, requestBytes(uint16(nbdproto.CmdRead), 0, uint64(i), uint64(i)*512, 512)...)
	}
	if _, err := nc.Write(burst); err != nil {
		t.Fatal(err)
	}
	readSimpleReplies(t, nc, n, 512)
	if got := dev.maxInflight.Load(); got < n/2 {
		t.Fatalf("at most %d of %d requests in the device at once", got, n)
	}
}
