package nbd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"blockcache/internal/nbdproto"
)

// Why a connection ended, for the disconnect log line.
var (
	errDisconnect    = errors.New("client disconnected (NBD_CMD_DISC)")
	errAbort         = errors.New("client aborted negotiation (NBD_OPT_ABORT)")
	errHangup        = errors.New("client hung up")
	errClosedBySrv   = errors.New("closed by server (export removed or shutdown)")
	errServerClosing = errors.New("server is shutting down")
	errSlowPayload   = errors.New("WRITE payload not received within the payload timeout")
)

// conn is one client connection, from accept to close.
type conn struct {
	srv *Server
	nc  net.Conn
	// raw is nc's raw access (see rawSocket), nil where it has none; src
	// is what requests are read from: raw, or nc.
	raw    *rawSocket
	src    io.Reader
	br     *bufio.Reader // requests, from src; used only by the holder of the reading turn
	remote string
	done   chan struct{} // closed when the connection is closed and forgotten

	// ex and structured are set by the handshake, on the connection's
	// goroutine, before the first worker starts; read-only after.
	ex         *export
	structured bool

	// The reading turn of transmit's goroutines (see transmit), passed to
	// an idle one over turn; whoever ends reading sends why on ended and
	// closes turn.
	turn  chan struct{}
	ended chan error
	hb    [nbdproto.RequestLen]byte // the header being read; only by the turn holder
	// largeWrite is set when the last request read was a large WRITE (see
	// readHeader); only the turn holder uses it.
	largeWrite bool
	// inline is the state of requests executed by the reader (see
	// transmit). seq, skip and backoff belong to the holder of the turn;
	// running is the seq of the inline request executing, 0 for none; seen
	// is what the watchdog found running last time; armed is set while its
	// timer is.
	inline struct {
		running, seen atomic.Uint64
		armed         atomic.Bool
		seq           uint64
		skip, backoff int
		timer         *time.Timer // calls watchdog
	}

	wmu sync.Mutex // held while writing to nc
	// out queues replies behind the one being written (see send).
	out struct {
		sync.Mutex
		queue, spare []*job
		writing      bool
	}
	iov   [][]byte    // the iovecs of a batch; only under wmu
	wbufs net.Buffers // the same, as net.Buffers.WriteTo consumes them
	// handedOff counts the handed-off requests executing or about to
	// reply (see sendYielding).
	handedOff atomic.Int32

	inflight sync.WaitGroup // admitted requests not yet answered
	limit    inflightLimiter
	requests atomic.Uint64 // requests admitted, for the disconnect log
	broken   atomic.Bool   // a reply could not be written; no more are attempted

	mu struct {
		sync.Mutex
		closing bool // set once by beginClose; the read deadline is then in the past
	}
	// closed is closed by beginClose, to stop a wait for the server's
	// payload budget.
	closed chan struct{}
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		srv:    s,
		nc:     nc,
		raw:    newRawSocket(nc),
		src:    nc,
		remote: nc.RemoteAddr().String(),
		done:   make(chan struct{}),
		closed: make(chan struct{}),
		iov:    make([][]byte, 0, 2*maxInflightRequests),
	}
	if c.raw != nil {
		c.src = c.raw
		c.raw.handedOff = &s.handedOff
		c.raw.pollers = s.opts.Pollers
	}
	c.br = bufio.NewReaderSize(c.src, 64<<10)
	c.out.queue = make([]*job, 0, maxInflightRequests)
	c.out.spare = make([]*job, 0, maxInflightRequests)
	if c.remote == "" || c.remote == "@" {
		c.remote = "unix:" + nc.LocalAddr().String()
	}
	c.limit.init()
	return c
}

// beginClose asks the connection to stop reading requests, answer those in
// flight, and close. It wakes a blocked read by moving the read deadline
// into the past, and a wait for the payload budget; a request whose header
// was read before then is answered, one cut off mid-payload (or still
// waiting for budget) is dropped.
func (c *conn) beginClose() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.mu.closing {
		c.mu.closing = true
		c.nc.SetReadDeadline(time.Unix(1, 0))
		close(c.closed)
	}
}

func (c *conn) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.closing
}

// setReadDeadline changes the read deadline unless beginClose already set it.
func (c *conn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.mu.closing {
		c.nc.SetReadDeadline(t)
	}
}

// serve runs the connection from handshake to close, on a goroutine of its
// own started by Serve. It logs one line at each end.
func (c *conn) serve() {
	start := time.Now()
	c.srv.log.Info("nbd connect", "remote", c.remote)
	err := c.session()
	c.inflight.Wait() // the requests already read are answered
	if err == errDisconnect {
		c.closeNotify()
	}
	c.nc.Close()
	c.srv.forget(c)
	name := ""
	if c.ex != nil {
		name = c.ex.Name
	}
	c.srv.log.Info("nbd disconnect", "remote", c.remote, "export", name,
		"requests", c.requests.Load(), "duration", time.Since(start).Round(time.Millisecond), "reason", err.Error())
	close(c.done)
}

// session negotiates and then serves requests until the connection ends. It
// recovers a panic into an error after closing the socket.
func (c *conn) session() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = c.panicked(p) // logged before the client sees the close
			c.nc.Close()
		}
	}()
	timeout := c.srv.opts.HandshakeTimeout
	c.setReadDeadline(time.Now().Add(timeout))
	c.nc.SetWriteDeadline(time.Now().Add(timeout))
	neg, err := negotiate(c.br, bufio.NewWriterSize(c.nc, 4096), connCatalog{c})
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && !c.closing() {
			return fmt.Errorf("negotiation not finished within the handshake timeout of %v", timeout)
		}
		return c.readError(err)
	}
	c.structured = neg.structured
	c.setReadDeadline(time.Time{})
	c.nc.SetWriteDeadline(time.Time{})
	return c.transmit()
}

// panicked logs a recovered panic with its stack and returns it as an error.
func (c *conn) panicked(p any) error {
	err := fmt.Errorf("panic: %v", p)
	c.srv.log.Error("nbd connection panicked; closing it", "remote", c.remote, "err", err, "stack", string(debug.Stack()))
	return err
}

// readError names why reading from the client failed.
func (c *conn) readError(err error) error {
	switch {
	case c.closing() && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		return errClosedBySrv
	case errors.Is(err, io.EOF):
		return errHangup
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w in the middle of a message", errHangup)
	}
	return err
}

// fail closes the socket after a reply could not be written: the client
// can no longer be answered consistently, and closing wakes the reader.
func (c *conn) fail(err error) {
	if c.broken.Swap(true) {
		return
	}
	c.srv.log.Debug("nbd reply failed; closing connection", "remote", c.remote, "err", err)
	c.nc.Close()
}

// connCatalog is the server as the handshake of one connection sees it.
type connCatalog struct{ c *conn }

func (k connCatalog) list() []*export            { return k.c.srv.listExports() }
func (k connCatalog) lookup(name string) *export { return k.c.srv.lookup(name) }
func (k connCatalog) attach(ex *export) bool     { return k.c.srv.attach(k.c, ex) }
func (k connCatalog) shuttingDown() bool         { return k.c.srv.shuttingDown() }
