package nbdremote

import (
	"fmt"
	"time"

	"blockcache/internal/nbdproto"
)

// reqState says who owns a request slot. Transitions happen under
// Device.mu; the owner alone touches the buffer.
type reqState uint8

const (
	// The zero state: never submitted. A slot back on the free list
	// keeps stateDone until it is submitted again.
	_ reqState = iota
	// statePending: waiting in Device.pending for a connection: never
	// sent, or sent on a connection that died before its reply.
	statePending
	// stateInflight: sent (or being sent) on conn; its reader goroutine
	// owns the buffer until it completes the request or the connection
	// is handed over after the reader stopped.
	stateInflight
	// stateDone: the outcome is in done; the caller takes it.
	stateDone
)

// request is a pooled slot for one NBD command. Slots are allocated once,
// with the device, so steady-state IO allocates nothing.
type request struct {
	idx uint32
	gen uint32 // bumped, under Device.mu, at each submission; high half of the cookie

	// Set by the caller before submission, then read-only.
	cmd    nbdproto.Command
	flags  nbdproto.CmdFlags
	off    int64
	length uint32
	buf    []byte // read destination or write source; nil otherwise

	done  chan error    // the outcome; capacity 1, one send per use
	wake  chan struct{} // nudges the caller to re-check its deadline; capacity 1
	timer *time.Timer   // the caller's deadline; reused

	// Guarded by Device.mu.
	state  reqState
	seq    uint64 // submission order, for replay
	conn   *conn  // while stateInflight
	sentAt time.Time
	// flushMark is, for a flush, Device.mu.wb.acked when it was sent: the
	// acknowledged writes it makes durable.
	flushMark uint64

	// Written by the reader goroutine of conn while stateInflight.
	result         error
	covered        uint64 // read bytes filled by data and hole chunks
	structuredRead bool   // sent on a connection with structured replies
}

func (r *request) cookie() uint64 { return uint64(r.gen)<<32 | uint64(r.idx) }

// window returns the part of a read's buffer a data or hole chunk at the
// export offset off, n bytes long, fills; it must lie inside the request.
func (r *request) window(off, n uint64) ([]byte, error) {
	start := uint64(r.off)
	if off < start || n > uint64(len(r.buf)) || off-start > uint64(len(r.buf))-n {
		return nil, fmt.Errorf("chunk at offset %d length %d outside the read at %d length %d: %w", off, n, r.off, len(r.buf), ErrProtocol)
	}
	return r.buf[off-start : off-start+n], nil
}

// wakeUp nudges the request's waiting caller; it never blocks.
func (r *request) wakeUp() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}
