package nbdremote

import (
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestDroppedTCPConnectionIsReset: a TCP connection the client drops (an
// IO timeout here) is reset, not closed in order, so that nothing still
// queued on it can reach the server later; Close still ends in order,
// with NBD_CMD_DISC.
func TestDroppedTCPConnectionIsReset(t *testing.T) {
	s := newFakeServerTCP(t, 64<<10)
	o := fastOptions()
	o.IOTimeout = 100 * time.Millisecond
	o.FastIOFailTimeout = 300 * time.Millisecond
	d := openFake(t, s, o)
	if err := d.WriteAt(make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.mu.silent = true
	s.mu.Unlock()
	if err := d.WriteAt(make([]byte, 4096), 0, false); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("write to a silent server = %v, want ErrDisconnected", err)
	}
	s.mu.Lock()
	s.mu.silent = false
	s.mu.Unlock()
	waitState(t, d, StateConnected)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	s.waitFor(func() bool { return slices.Contains(s.mu.ended, errDisc) })
	s.mu.Lock()
	defer s.mu.Unlock()
	resets := 0
	for i, err := range s.mu.ended {
		switch {
		case errors.Is(err, syscall.ECONNRESET):
			resets++
		case err != errDisc:
			t.Fatalf("connection %d ended at the server with %v, want a reset (dropped) or NBD_CMD_DISC (Close)", i, err)
		}
	}
	if resets == 0 || resets != len(s.mu.ended)-1 {
		t.Fatalf("connections ended %v, want dropped ones reset and one NBD_CMD_DISC", s.mu.ended)
	}
}
