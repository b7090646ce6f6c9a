package nbd

import (
	"encoding/binary"
	"io"
	"testing"
	"time"

	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/nbdproto"
)

// hitDevice is a hookDevice that says it serves reads below hitBytes at once
// (bdev.TryReader), as a cache does its hits; reads above may wait.
type hitDevice struct {
	*hookDevice
	hitBytes int64
}

func (d hitDevice) TryReadAt(p []byte, off int64) (bool, error) {
	if off+int64(len(p)) > d.hitBytes {
		return false, nil
	}
	return true, d.ReadAt(p, off)
}

// A request the device may make wait (a cache miss held at a gate in the
// core) is not executed by the goroutine that reads requests: the reads
// and writes sent after it on the same connection are read, executed and
// answered while it is held, without the inline watchdog (which would take
// the turn from a stuck reader only after its period; here an hour).
func TestMayWaitRequestIsNotInline(t *testing.T) {
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	const hitBytes = 1 << 20
	dev := hitDevice{hookDevice: &hookDevice{Device: bdevtest.NewMalloc(t, "m0", 8192)}, hitBytes: hitBytes}
	dev.hook = func(op string, off, n int64) error {
		if op == "read" && off >= hitBytes {
			entered <- struct{}{}
			<-gate
		}
		return nil
	}
	ts := startServerWith(t, func(s *Server) { s.inlinePeriod = time.Hour }, Export{Name: "disk", Device: dev})
	nc := rawSession(t, ts)
	released := false
	defer func() {
		if !released {
			close(gate)
		}
	}()

	// The miss, then a hit and a write behind it on the same connection.
	burst := requestBytes(uint16(nbdproto.CmdRead), 0, 1, hitBytes, 4096)
	burst = append(burst, requestBytes(uint16(nbdproto.CmdRead), 0, 2, 0, 4096)...)
	burst = append(burst, requestBytes(uint16(nbdproto.CmdWrite), 0, 3, 8192, 4096)...)
	burst = append(burst, make([]byte, 4096)...)
	if _, err := nc.Write(burst); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the miss never reached the device")
	}

	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := map[uint64]bool{}
	hdr := make([]byte, nbdproto.SimpleReplyLen)
	for len(got) < 2 {
		if _, err := io.ReadFull(nc, hdr); err != nil {
			t.Fatalf("with the miss held, replies received for %v, then: %v", got, err)
		}
		if e := binary.BigEndian.Uint32(hdr[4:8]); e != 0 {
			t.Fatalf("errno %d", e)
		}
		h := binary.BigEndian.Uint64(hdr[8:16])
		if h == 1 {
			t.Fatal("the held miss was answered while held")
		}
		got[h] = true
		if h == 2 {
			if _, err := io.ReadFull(nc, make([]byte, 4096)); err != nil {
				t.Fatal(err)
			}
		}
	}

	close(gate)
	released = true
	if _, err := io.ReadFull(nc, hdr); err != nil {
		t.Fatal(err)
	}
	if h := binary.BigEndian.Uint64(hdr[8:16]); h != 1 {
		t.Fatalf("reply for handle %d, want the released miss (1)", h)
	}
}
