// Package nbdremote is a bdev.Device backed by an export on a remote NBD
// server: a cache's core on network storage (Ceph RBD, iSCSI, NFS or
// qcow2 images behind qemu-nbd, nbdkit plugins).
//
// It speaks the client side of the protocol itself (wire.go): fixed
// newstyle negotiation with NBD_OPT_GO and NBD_INFO_BLOCK_SIZE,
// structured replies when the server agrees, many requests in flight on
// each connection, and several connections when the server advertises
// multi-conn. A lost connection is re-established with SPDK's NVMe
// reconnect knobs (Options); requests whose outcome is unknown are resent
// in their original order before anything newer (reconnect.go).
// docs/remote.md describes the behaviour for users.
package nbdremote

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/nbdproto"
)

// State is the connection state a Device reports.
type State string

// States.
const (
	StateConnected    State = "connected"
	StateReconnecting State = "reconnecting"
	StateLost         State = "lost"   // ctrlr_loss_timeout ran out
	StateClosed       State = "closed" // Close was called
)

// Device is a remote NBD export as a block device. Its methods are safe for
// concurrent use.
type Device struct {
	info       bdev.Info
	uri        URI
	opts       Options
	flags      nbdproto.TxFlags // the export's transmission flags, fixed at Open
	maxPayload uint32
	nconns     int // connections per session: Options.Connections when multi-conn, else 1

	slots []request
	free  chan *request

	// replayDone is signalled when the request being replayed completes.
	replayDone chan struct{}
	// stop is closed by Close to end the reconnect goroutine's waits.
	stop        chan struct{}
	reconnector sync.WaitGroup

	reconnects atomic.Uint64

	mu struct {
		sync.Mutex
		state   State
		session []*conn // live connections; nil while reconnecting
		// replaying is the connection a reconnect is replaying on, and
		// replayReq the request on it whose reply is awaited.
		replaying *conn
		replayReq *request
		// pending holds requests waiting for a connection, in seq order.
		pending  []*request
		seq      uint64
		rr       int
		inflight int
		lostAt   time.Time
		lastErr  error
		wb       writeBack // durability of acknowledged writes (durability.go)
	}
}

// Open connects to the export at uri and returns the device named name
// with the export's size and block size. A nil id is derived from the URI.
// It fails at once, as SPDK's bdev_nvme_attach_controller does, if the
// server cannot be reached or refuses the export (Unreachable tells the
// two apart).
func Open(name string, uri URI, id uuid.UUID, opts Options) (*Device, error) {
	return OpenContext(context.Background(), name, uri, id, opts)
}

// OpenContext is Open, given up when ctx is cancelled while it connects.
// ctx bounds only the connecting: the device outlives it.
func OpenContext(ctx context.Context, name string, uri URI, id uuid.UUID, opts Options) (*Device, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("NBD client %q: %w", name, err)
	}
	if id == uuid.Nil {
		id = uuid.NewSHA1(uuid.NameSpaceURL, []byte(uri.String()))
	}
	d := &Device{uri: uri, opts: opts, replayDone: make(chan struct{}, 1), stop: make(chan struct{})}
	timeout := opts.IOTimeout
	if timeout == 0 {
		timeout = DefaultIOTimeout
	}
	nc, br, ex, err := dialConn(ctx, uri, timeout)
	if err != nil {
		return nil, fmt.Errorf("NBD client %q: %w", name, err)
	}
	bs, nblocks, maxPayload, err := ex.geometry()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("NBD client %q: export at %s: %w", name, uri, err)
	}
	d.info = bdev.Info{Name: name, UUID: id, ProductName: "NBD disk", BlockSize: bs, NumBlocks: nblocks, Abilities: ex.abilities(),
		ReadOnly: ex.flags&nbdproto.TxReadOnly != 0}
	d.flags, d.maxPayload = ex.flags, maxPayload
	d.nconns = 1
	if opts.Connections > 1 && ex.flags&nbdproto.TxCanMultiConn != 0 {
		d.nconns = opts.Connections
	}
	d.slots = make([]request, opts.QueueDepth)
	d.free = make(chan *request, opts.QueueDepth)
	for i := range d.slots {
		r := &d.slots[i]
		r.idx = uint32(i)
		r.done = make(chan error, 1)
		r.wake = make(chan struct{}, 1)
		r.timer = time.NewTimer(time.Hour)
		r.timer.Stop()
		d.free <- r
	}
	conns := []*conn{newConn(d, nc, br, ex.structured)}
	for len(conns) < d.nconns {
		c, err := d.dialMore(ctx, ex, timeout)
		if err != nil {
			for _, c := range conns {
				c.nc.Close()
			}
			return nil, fmt.Errorf("NBD client %q: connection %d of %d: %w", name, len(conns)+1, d.nconns, err)
		}
		conns = append(conns, c)
	}
	d.mu.state = StateConnected
	d.mu.session = conns
	for _, c := range conns {
		c.startReading()
	}
	return d, nil
}

// dialMore opens one more connection and checks it shows the same export.
func (d *Device) dialMore(ctx context.Context, want export, timeout time.Duration) (*conn, error) {
	nc, br, ex, err := dialConn(ctx, d.uri, timeout)
	if err != nil {
		return nil, err
	}
	if ex.size != want.size || ex.flags != want.flags {
		nc.Close()
		return nil, fmt.Errorf("export at %s changed: %d bytes, flags %v, was %d bytes, flags %v: %w",
			d.uri, ex.size, ex.flags, want.size, want.flags, ErrProtocol)
	}
	return newConn(d, nc, br, ex.structured), nil
}

// Info implements bdev.Device.
func (d *Device) Info() bdev.Info { return d.info }

// URI returns the export's URI in canonical form.
func (d *Device) URI() URI { return d.uri }

// Status is a snapshot of the device's connection, for bdev_get_bdevs.
type Status struct {
	State       State
	Reconnects  uint64 // successful reconnects since Open
	Connections int    // per session
	LastError   string // why the connection was last lost, or ""
	ReadOnly    bool
	Flush, FUA  bool
	Trim, Zero  bool
	MultiConn   bool
}

// Status returns the device's current state.
func (d *Device) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Status{State: d.mu.state, Reconnects: d.reconnects.Load(), Connections: d.nconns,
		ReadOnly: d.flags&nbdproto.TxReadOnly != 0, Flush: d.flags&nbdproto.TxSendFlush != 0, FUA: d.flags&nbdproto.TxSendFUA != 0,
		Trim: d.flags&nbdproto.TxSendTrim != 0, Zero: d.flags&nbdproto.TxSendWriteZeroes != 0, MultiConn: d.flags&nbdproto.TxCanMultiConn != 0}
	if d.mu.lastErr != nil {
		s.LastError = d.mu.lastErr.Error()
	}
	return s
}

// ReadAt implements bdev.Device.
func (d *Device) ReadAt(p []byte, off int64) error {
	if err := bdev.CheckIO(&d.info, "read", off, int64(len(p))); err != nil {
		return err
	}
	return d.chunked(nbdproto.CmdRead, 0, p, off, int64(len(p)))
}

// WriteAt implements bdev.Device. Without NBD_FLAG_SEND_FUA, a FUA write is
// a write followed by a flush, which fails if a loss was recorded since the
// write began (FlushSince).
func (d *Device) WriteAt(p []byte, off int64, fua bool) error {
	if err := d.checkWrite("write", off, int64(len(p))); err != nil {
		return err
	}
	var flags nbdproto.CmdFlags
	var mark uint64
	if fua && d.flags&nbdproto.TxSendFUA != 0 {
		flags = nbdproto.CmdFlagFUA
	} else if fua {
		mark = d.WriteBackMark()
	}
	if err := d.chunked(nbdproto.CmdWrite, flags, p, off, int64(len(p))); err != nil {
		return err
	}
	if fua && flags == 0 {
		return d.FlushSince(mark)
	}
	return nil
}

// Flush implements bdev.Device. A server that does not advertise
// NBD_FLAG_SEND_FLUSH has no volatile cache: every acknowledged write is
// durable, and Flush only checks the device is open. Otherwise Flush
// fails with ErrWritesLost when a lost session may have taken
// acknowledged writes with it (durability.go).
func (d *Device) Flush() error {
	if d.flags&nbdproto.TxSendFlush == 0 {
		return d.openErr("flush")
	}
	seen := d.flushSeen()
	if err := d.do(nbdproto.CmdFlush, 0, nil, 0, 0); err != nil {
		return err
	}
	return d.flushed(seen)
}

// Discard implements bdev.Discarder with NBD_CMD_TRIM.
func (d *Device) Discard(off, length int64) error {
	if d.flags&nbdproto.TxSendTrim == 0 {
		return fmt.Errorf("%s discard: the server does not advertise NBD_FLAG_SEND_TRIM: %w", d.info.Name, bdev.ErrNotSupported)
	}
	if err := d.checkWrite("discard", off, length); err != nil {
		return err
	}
	return d.chunked(nbdproto.CmdTrim, 0, nil, off, length)
}

// WriteZeroes implements bdev.WriteZeroer with NBD_CMD_WRITE_ZEROES.
func (d *Device) WriteZeroes(off, length int64) error {
	if d.flags&nbdproto.TxSendWriteZeroes == 0 {
		return fmt.Errorf("%s write-zeroes: the server does not advertise NBD_FLAG_SEND_WRITE_ZEROES: %w", d.info.Name, bdev.ErrNotSupported)
	}
	if err := d.checkWrite("write-zeroes", off, length); err != nil {
		return err
	}
	return d.chunked(nbdproto.CmdWriteZeroes, 0, nil, off, length)
}

// abilities are what the export's transmission flags advertise: discard
// with NBD_FLAG_SEND_TRIM and write-zeroes with NBD_FLAG_SEND_WRITE_ZEROES,
// neither on a read-only export. NBD_CMD_TRIM promises nothing about what a
// trimmed range reads back as, so ZeroesOnDiscard is never set.
func (ex export) abilities() bdev.Abilities {
	if ex.flags&nbdproto.TxReadOnly != 0 {
		return bdev.Abilities{}
	}
	return bdev.Abilities{Discard: ex.flags&nbdproto.TxSendTrim != 0, WriteZeroes: ex.flags&nbdproto.TxSendWriteZeroes != 0}
}

// ReadOnly reports whether the export is read-only (NBD_FLAG_READ_ONLY),
// as Info's ReadOnly does.
func (d *Device) ReadOnly() bool { return d.info.ReadOnly }

func (d *Device) checkWrite(op string, off, length int64) error {
	if err := bdev.CheckIO(&d.info, op, off, length); err != nil {
		return err
	}
	if d.flags&nbdproto.TxReadOnly != 0 {
		return &bdev.IOError{Op: op, Dev: d.info.Name, Offset: off, Len: length,
			Err: fmt.Errorf("the export is read-only: %w", syscall.EROFS)}
	}
	return nil
}

func (d *Device) openErr(op string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch d.mu.state {
	case StateClosed:
		return fmt.Errorf("%s %s: %w", d.info.Name, op, bdev.ErrClosed)
	case StateLost:
		return &bdev.IOError{Op: op, Dev: d.info.Name, Err: ErrLost}
	}
	return nil
}

// chunked issues [off, off+length) in requests no larger than the server
// takes, one after another.
func (d *Device) chunked(cmd nbdproto.Command, flags nbdproto.CmdFlags, p []byte, off, length int64) error {
	limit := int64(d.maxPayload)
	if cmd == nbdproto.CmdTrim || cmd == nbdproto.CmdWriteZeroes {
		limit = 1 << 30
	}
	for length > 0 {
		n := min(length, limit)
		var buf []byte
		if p != nil {
			buf, p = p[:n], p[n:]
		}
		if err := d.do(cmd, flags, buf, off, n); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// do runs one request: it takes a slot, submits it, waits for its outcome
// and gives the slot back.
func (d *Device) do(cmd nbdproto.Command, flags nbdproto.CmdFlags, buf []byte, off, length int64) error {
	r := <-d.free
	r.cmd, r.flags, r.off, r.length, r.buf = cmd, flags, off, uint32(length), buf
	r.result, r.covered = nil, 0
	err := d.submit(r)
	r.buf = nil
	d.free <- r
	if err != nil {
		return &bdev.IOError{Op: cmdName(cmd), Dev: d.info.Name, Offset: off, Len: length, Err: err}
	}
	return nil
}

// submit sends r on a live connection, or queues it while the device
// reconnects, and waits for its outcome.
func (d *Device) submit(r *request) error {
	now := time.Now()
	d.mu.Lock()
	switch d.mu.state {
	case StateClosed:
		d.mu.Unlock()
		return bdev.ErrClosed
	case StateLost:
		d.mu.Unlock()
		return ErrLost
	}
	d.mu.seq++
	r.seq = d.mu.seq
	r.gen++ // under mu: readers compare cookies under it
	if d.mu.state == StateConnected && len(d.mu.pending) == 0 {
		c := d.mu.session[d.mu.rr%len(d.mu.session)]
		d.mu.rr++
		d.startLocked(r, c, now)
		d.mu.Unlock()
		if err := c.send(r); err != nil {
			d.fail(c, err)
		}
		return d.wait(r)
	}
	if d.failFastLocked(now) {
		d.mu.Unlock()
		return ErrDisconnected
	}
	r.state = statePending
	d.mu.pending = append(d.mu.pending, r)
	d.mu.Unlock()
	return d.wait(r)
}

// startLocked makes r in flight on c.
func (d *Device) startLocked(r *request, c *conn, now time.Time) {
	r.state, r.conn, r.sentAt = stateInflight, c, now
	r.structuredRead = c.structured
	d.mu.inflight++
	d.flushSentLocked(r)
}

// failFastLocked reports whether requests should fail at once: the
// connection was lost longer than fast_io_fail_timeout ago.
func (d *Device) failFastLocked(now time.Time) bool {
	return d.mu.state == StateReconnecting && d.opts.FastIOFailTimeout > 0 &&
		now.Sub(d.mu.lostAt) >= d.opts.FastIOFailTimeout
}

// wait waits for r's outcome, enforcing the IO timeout while r is in
// flight and fast_io_fail_timeout while it waits for a connection.
func (d *Device) wait(r *request) error {
	for {
		d.mu.Lock()
		var deadline time.Time
		switch r.state {
		case stateDone:
			d.mu.Unlock()
			return <-r.done
		case stateInflight:
			if d.opts.IOTimeout > 0 {
				deadline = r.sentAt.Add(d.opts.IOTimeout)
			}
		case statePending:
			if d.opts.FastIOFailTimeout > 0 {
				deadline = d.mu.lostAt.Add(d.opts.FastIOFailTimeout)
			}
		}
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			if r.state == statePending {
				d.removePendingLocked(r)
				r.state = stateDone
				d.mu.Unlock()
				return fmt.Errorf("waited %v for the connection: %w", d.opts.FastIOFailTimeout, ErrDisconnected)
			}
			c := r.conn
			d.mu.Unlock()
			d.fail(c, fmt.Errorf("%s at offset %d got no reply in %v: %w", cmdName(r.cmd), r.off, d.opts.IOTimeout, ErrTimeout))
			<-c.dead // r is pending or done now
			continue
		}
		d.mu.Unlock()
		var tc <-chan time.Time
		if !deadline.IsZero() {
			r.timer.Reset(deadline.Sub(now))
			tc = r.timer.C
		}
		select {
		case err := <-r.done:
			r.timer.Stop()
			return err
		case <-r.wake:
		case <-tc:
		}
		r.timer.Stop()
	}
}

func (d *Device) removePendingLocked(r *request) {
	if i := slices.Index(d.mu.pending, r); i >= 0 {
		d.mu.pending = slices.Delete(d.mu.pending, i, i+1)
	}
}

// lookupFunc returns the cookie lookup of c's reader.
func (d *Device) lookupFunc(c *conn) func(uint64) *request {
	return func(cookie uint64) *request {
		idx := uint32(cookie)
		if int(idx) >= len(d.slots) {
			return nil
		}
		r := &d.slots[idx]
		d.mu.Lock()
		defer d.mu.Unlock()
		if r.state != stateInflight || r.conn != c || r.cookie() != cookie {
			return nil
		}
		return r
	}
}

// complete ends r, whose reply c's reader has read.
func (d *Device) complete(c *conn, r *request) {
	d.mu.Lock()
	r.state, r.conn = stateDone, nil
	d.mu.inflight--
	d.completedLocked(r)
	if d.mu.replayReq == r {
		d.mu.replayReq = nil
		select {
		case d.replayDone <- struct{}{}:
		default:
		}
	}
	d.mu.Unlock()
	r.done <- r.result
}

// Close implements bdev.Device: requests in flight get up to the IO
// timeout (5 s when there is none) to finish, requests waiting for a
// connection fail, then the connections are closed with NBD_CMD_DISC.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.mu.state == StateClosed {
		d.mu.Unlock()
		return nil
	}
	d.mu.state = StateClosed
	close(d.stop)
	d.failPendingLocked(bdev.ErrClosed)
	d.mu.Unlock()

	limit := d.opts.IOTimeout
	if limit == 0 {
		limit = 5 * time.Second
	}
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		d.mu.Lock()
		n := d.mu.inflight
		d.mu.Unlock()
		if n == 0 {
			break
		}
	}
	d.reconnector.Wait()
	d.mu.Lock()
	conns := slices.Concat(d.mu.session, []*conn{d.mu.replaying})
	d.mu.session, d.mu.replaying = nil, nil
	d.mu.Unlock()
	for _, c := range conns {
		if c != nil {
			c.disconnect()
			d.fail(c, bdev.ErrClosed)
			<-c.dead
		}
	}
	return nil
}

// failPendingLocked completes every waiting request with err.
func (d *Device) failPendingLocked(err error) {
	for _, r := range d.mu.pending {
		r.state = stateDone
		r.result = err
		r.done <- err
	}
	d.mu.pending = nil
}
