package nbdremote

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"blockcache/internal/nbdproto"
)

// conn is one connection to the server in transmission phase. Requests are
// written by the goroutine that submits them, one at a time under wmu; one
// reader goroutine (readLoop) reads every reply.
type conn struct {
	d          *Device
	nc         net.Conn
	br         *bufio.Reader
	structured bool

	wmu struct {
		sync.Mutex
		closed bool // set by the reader on its way out: nothing more is sent
		hdr    [nbdproto.RequestLen]byte
		bufs   [2][]byte
		nb     net.Buffers
	}

	// Guarded by Device.mu.
	failed bool  // the connection is being torn down
	err    error // why, the first reason
	// dead is closed once the reader stopped and every request the
	// connection held was handed back to Device.pending.
	dead chan struct{}

	// unpoll removes the connection's check from Options.Pollers (see
	// startReading); nil if none was added. peekBuf is where the check's peek
	// lands; nobody reads it.
	unpoll  func()
	peekBuf [1]byte
}

// dialConn connects to u and negotiates the export, within timeout
// (none when zero) and until ctx is cancelled. An nbds URI upgrades the connection to TLS first
// (tls.go); the connection returned is then the TLS one.
func dialConn(ctx context.Context, u URI, timeout time.Duration) (net.Conn, *bufio.Reader, export, error) {
	var cfg *tls.Config
	if u.TLS.Enabled {
		var err error
		if cfg, err = clientTLSConfig(u); err != nil {
			return nil, nil, export{}, fmt.Errorf("TLS for %s: %w", u, err)
		}
	}
	dl := net.Dialer{Timeout: timeout}
	nc, err := dl.DialContext(ctx, u.Network, u.Address)
	if err != nil {
		return nil, nil, export{}, fmt.Errorf("connect to %s: %w", u, err)
	}
	if timeout > 0 {
		nc.SetDeadline(time.Now().Add(timeout))
	}
	// Cancelling ctx ends the handshake: its reads and writes time out.
	cancelled := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer cancelled()
	br := bufio.NewReaderSize(nc, 64<<10)
	var ex export
	if cfg == nil {
		ex, err = negotiate(br, nc, u.Export)
	} else {
		nc, br, ex, err = negotiateTLS(ctx, nc, br, u.Export, cfg)
	}
	if err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, nil, export{}, fmt.Errorf("handshake with %s: %w", u, context.Cause(ctx))
		}
		if isTimeout(err) && !errors.Is(err, ErrTimeout) {
			err = fmt.Errorf("%v: %w", err, ErrTimeout)
		}
		return nil, nil, export{}, fmt.Errorf("handshake with %s: %w", u, err)
	}
	if !cancelled() {
		nc.Close()
		return nil, nil, export{}, fmt.Errorf("handshake with %s: %w", u, context.Cause(ctx))
	}
	nc.SetDeadline(time.Time{})
	return nc, br, ex, nil
}

// negotiateTLS greets, upgrades nc to TLS with NBD_OPT_STARTTLS and
// negotiates the export over TLS. It returns the connection to use from
// then on (nc itself on failure, for the caller to close).
func negotiateTLS(ctx context.Context, nc net.Conn, br *bufio.Reader, name string, cfg *tls.Config) (net.Conn, *bufio.Reader, export, error) {
	noZeroes, err := greet(br, nc)
	if err != nil {
		return nc, br, export{}, err
	}
	if err := startTLS(br, nc); err != nil {
		return nc, br, export{}, err
	}
	if n := br.Buffered(); n > 0 {
		return nc, br, export{}, fmt.Errorf("the server sent %d bytes after acknowledging NBD_OPT_STARTTLS, before the TLS handshake: %w", n, ErrProtocol)
	}
	tc, err := upgrade(ctx, nc, cfg)
	if err != nil {
		return nc, br, export{}, err
	}
	cr := &countingReader{r: tc}
	br = bufio.NewReaderSize(cr, 64<<10)
	ex, err := haggle(br, tc, name, noZeroes)
	if err != nil {
		return tc, br, export{}, afterHandshake(err, cr.n)
	}
	return tc, br, ex, nil
}

func newConn(d *Device, nc net.Conn, br *bufio.Reader, structured bool) *conn {
	return &conn{d: d, nc: nc, br: br, structured: structured, dead: make(chan struct{})}
}

// startReading starts the connection's reader, and registers its check
// with Options.Pollers: whether bytes wait in the socket for the reader,
// which is then parked in the runtime's network poller (package poller).
// The check peeks at the socket (recv with MSG_PEEK and MSG_DONTWAIT) by
// its descriptor number, taken once; abort removes the check before it
// closes the socket, and a check that runs after that (a Poll already
// under way) peeks at a closed or reused descriptor, which at worst
// reports bytes that are not the connection's: one needless poll.
func (c *conn) startReading() {
	if set := c.d.opts.Pollers; set != nil {
		if fd, ok := socketFD(c.nc); ok {
			c.unpoll = set.Add(func() bool { return c.peek(fd) })
		}
	}
	go c.readLoop()
}

// peek reports whether the socket fd holds bytes, or its end.
func (c *conn) peek(fd int) bool {
	_, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&c.peekBuf[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return e == 0
}

// socketFD returns the descriptor of nc's socket (under TLS, of the
// connection TLS runs on).
func socketFD(nc net.Conn) (int, bool) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil || fd < 0 {
		return 0, false
	}
	return fd, true
}

// send writes r's request and payload. An error means the connection is
// broken; the caller fails it.
func (c *conn) send(r *request) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wmu.closed {
		return fmt.Errorf("connection closed: %w", errConnGone)
	}
	h := c.wmu.hdr[:]
	nbdproto.PutRequest(h, nbdproto.Request{Flags: r.flags, Type: r.cmd, Cookie: r.cookie(), Offset: uint64(r.off), Length: r.length})
	c.wmu.bufs[0] = h
	n := 1
	if r.cmd == nbdproto.CmdWrite {
		c.wmu.bufs[1] = r.buf
		n = 2
	}
	if t := c.d.opts.IOTimeout; t > 0 {
		c.nc.SetWriteDeadline(time.Now().Add(t))
	}
	c.wmu.nb = c.wmu.bufs[:n]
	_, err := c.wmu.nb.WriteTo(c.nc)
	c.wmu.bufs[1] = nil
	if err != nil {
		return fmt.Errorf("send %s: %w", cmdName(r.cmd), err)
	}
	return nil
}

// disconnect sends NBD_CMD_DISC, best effort.
func (c *conn) disconnect() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wmu.closed {
		return
	}
	h := c.wmu.hdr[:]
	nbdproto.PutRequest(h, nbdproto.Request{Type: nbdproto.CmdDisc})
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.nc.Write(h)
}

// readLoop reads replies until the connection fails, completing requests
// as their replies end; then it hands every request still in flight back
// to the device.
func (c *conn) readLoop() {
	rr := replyReader{r: c.br, structured: c.structured, lookup: c.d.lookupFunc(c)}
	var err error
	for {
		var req *request
		var done bool
		req, done, err = rr.next()
		if err != nil {
			break
		}
		if done {
			c.d.complete(c, req)
		}
	}
	c.abort()
	c.wmu.Lock()
	c.wmu.closed = true
	c.wmu.Unlock()
	c.d.connLost(c, err)
}

// abort closes the connection without delivering what is still queued for
// the server. Over TCP, SO_LINGER 0 makes the kernel drop its send queue
// and reset the connection instead of sending the rest and FIN: requests
// written to a dropped connection would otherwise still reach the server
// when a lost link comes back, possibly after their resent copies and
// newer writes (docs/remote.md, "The limit"). A TLS session is not told
// (no close_notify, which could wait on a stalled connection).
func (c *conn) abort() {
	if c.unpoll != nil {
		c.unpoll()
	}
	raw := c.nc
	if tc, ok := raw.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	raw.Close()
}

// errConnGone marks a send on a connection already torn down.
var errConnGone = errors.New("NBD connection gone")
