package jsonrpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"time"
)

// Limits on what one client can make the server hold. SPDK reads a request
// into a fixed 32 KiB buffer (a longer one ends the connection without a
// reply) and takes ids of at most 128 bytes; blockcache allows longer
// requests but bounds them, and how many large ones are in memory at once.
const (
	// DefaultMaxRequestBytes caps one request (one top-level JSON value,
	// including a whole batch) unless Options.MaxRequestBytes says
	// otherwise. The largest request a method needs is a few KiB.
	DefaultMaxRequestBytes = 4 << 20
	// DefaultMaxLargeRequests is how many requests larger than
	// smallRequestBytes may be read and handled at once, across all
	// connections, unless Options.MaxLargeRequests says otherwise.
	DefaultMaxLargeRequests = 2
	// DefaultLargeRequestTimeout is how long a large request may take to
	// arrive once it holds its slot, unless Options.LargeRequestTimeout
	// says otherwise.
	DefaultLargeRequestTimeout = 30 * time.Second

	// smallRequestBytes is what a connection may buffer of a request
	// without a large-request slot: every request rpc.py sends fits, so
	// ordinary management never waits behind large requests.
	smallRequestBytes = 64 << 10
	// maxIDBytes is SPDK's SPDK_JSONRPC_ID_MAX_LEN: a longer id makes the
	// request invalid, so that no reply echoes a long id back.
	maxIDBytes = 128
	// maxBatch is the most requests one batch may hold, so that one batch
	// cannot multiply a reply (bdev_get_bdevs, say) without bound.
	maxBatch = 128
	// maxErrorText bounds an error reply's message and its data; anything
	// longer is cut in the middle (excerpt.Text). Messages quote client
	// input through excerpt.Quote; this catches any that do not.
	maxErrorText = 512
)

var (
	// errTooLarge ends a connection whose current request exceeds the cap.
	errTooLarge = errors.New("request too large")
	// errSlowRequest ends a connection whose large request did not arrive
	// within the timeout.
	errSlowRequest = errors.New("large request not complete in time")
)

// readDeadliner is the part of net.Conn the request reader uses to time
// out a large request.
type readDeadliner interface {
	SetReadDeadline(time.Time) error
}

// requestReader is what a connection's json.Decoder reads from. It keeps
// the decoder from holding more than smallRequestBytes of a request unless
// the connection holds one of the server's large-request slots, and more
// than MaxRequestBytes in any case. Used by one connection's goroutine only.
type requestReader struct {
	s  *Server
	r  io.Reader
	dl readDeadliner // nil if r has no deadlines

	// pending are bytes read ahead by a previous decoder (see renew), handed
	// out before any more are read from r.
	pending []byte
	read    int64 // bytes returned to the current decoder
	start   int64 // the decoder's offset where the current request begins
	large   bool  // holds a slot of s.largeSlots
}

func newRequestReader(s *Server, r io.Reader) *requestReader {
	rr := &requestReader{s: s, r: r}
	rr.dl, _ = r.(readDeadliner)
	return rr
}

func (rr *requestReader) Read(p []byte) (int, error) {
	used := rr.read - rr.start
	limit := rr.s.opts.MaxRequestBytes
	if used >= limit {
		return 0, errTooLarge
	}
	if !rr.large {
		if used < smallRequestBytes {
			limit = min(limit, smallRequestBytes)
		} else if err := rr.acquire(); err != nil {
			return 0, err
		}
	}
	p = p[:min(int64(len(p)), limit-used)]
	var n int
	var err error
	if len(rr.pending) > 0 {
		n = copy(p, rr.pending)
		rr.pending = rr.pending[n:]
	} else {
		n, err = rr.r.Read(p)
		if err != nil && rr.large && errors.Is(err, os.ErrDeadlineExceeded) && !rr.s.closing.Load() {
			err = errSlowRequest
		}
	}
	rr.read += int64(n)
	return n, err
}

// acquire waits for a large-request slot, then gives the request
// LargeRequestTimeout to arrive, so that a client that stalls cannot keep
// the slot.
func (rr *requestReader) acquire() error {
	select {
	case rr.s.largeSlots <- struct{}{}:
	case <-rr.s.done:
		return ErrServerClosed
	}
	rr.large = true
	rr.setDeadline(time.Now().Add(rr.s.opts.LargeRequestTimeout))
	return nil
}

// release gives the slot back, if held.
func (rr *requestReader) release() {
	if !rr.large {
		return
	}
	rr.large = false
	<-rr.s.largeSlots
	rr.setDeadline(time.Time{})
}

// setDeadline sets the read deadline unless the server is closing, whose
// wake-up deadline (beginClose) it must not undo.
func (rr *requestReader) setDeadline(t time.Time) {
	if rr.dl == nil {
		return
	}
	rr.dl.SetReadDeadline(t) //nolint:errcheck // a dead conn fails its next read
	if rr.s.closing.Load() {
		rr.dl.SetReadDeadline(time.Now()) //nolint:errcheck
	}
}

// next records that the decoder has consumed a request up to offset. After
// a large request it returns a new decoder over what dec had read ahead,
// dropping dec's buffer, which grew to the request's size, and gives the
// slot back unless the bytes read ahead are already more than a small
// request; otherwise it returns dec.
func (rr *requestReader) next(dec *json.Decoder) *json.Decoder {
	rr.start = dec.InputOffset()
	if !rr.large {
		return dec
	}
	ahead, _ := io.ReadAll(dec.Buffered())
	rr.pending = append(bytes.Clone(ahead), rr.pending...)
	rr.read, rr.start = 0, 0
	if len(rr.pending) < smallRequestBytes {
		rr.release()
	}
	return json.NewDecoder(rr)
}
