package nbdremote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"blockcache/internal/bdev"
)

// Reconnecting, and the ordering guarantee across it.
//
// When a connection fails (a read or write error, a protocol violation, an
// IO timeout), every connection of the session is closed and each reader
// goroutine, once stopped, hands the requests it still held back to
// Device.pending: their outcome is unknown (the server may or may not have
// executed them). pending is kept in submission order, and while it is not
// empty every new request queues behind it, connected or not.
//
// The reconnect goroutine dials a new session and replays pending one
// request at a time, oldest first, waiting for each reply before sending
// the next; once everything that waited when the replay began is done,
// the device takes new requests directly again, and those submitted
// during the replay are sent then. So a write whose outcome is unknown reaches the server,
// again, before any newer write is sent, overlapping or not, and a flush
// is only answered once every earlier write was answered after it. A
// request that waits longer than fast_io_fail_timeout since the loss is
// taken out of pending and fails with EIO; it is then never sent.
//
// All of this orders what the client sends. A request the server read
// from the lost connection and had not yet executed may still run after
// the new session's requests: nothing in NBD orders connections against
// each other (docs/remote.md, "The limit").
//
// Writes the lost session had acknowledged without a flush may have died
// with the server's cache; a new session's flush cannot cover them, so
// reconnect records the loss for Flush to report (durability.go).

// fail starts tearing down the session c belongs to.
func (d *Device) fail(c *conn, err error) {
	d.mu.Lock()
	conns := d.failLocked(c, err)
	d.mu.Unlock()
	for _, x := range conns {
		if errors.Is(err, bdev.ErrClosed) {
			x.nc.Close() // Close sent NBD_CMD_DISC: let it through
		} else {
			x.abort()
		}
	}
}

// failLocked marks c and the rest of its session failed and returns the
// connections to close.
func (d *Device) failLocked(c *conn, err error) []*conn {
	if c.failed {
		return nil
	}
	var conns []*conn
	if slices.Contains(d.mu.session, c) {
		conns = d.mu.session
		d.mu.session = nil
	} else {
		conns = []*conn{c}
	}
	for _, x := range conns {
		if !x.failed {
			x.failed, x.err = true, err
		}
	}
	if d.mu.state == StateConnected {
		d.mu.state = StateReconnecting
		d.mu.lostAt = time.Now()
		d.mu.lastErr = err
		d.event("connection lost", err)
		d.reconnector.Add(1)
		go d.reconnectLoop(slices.Clone(conns))
	}
	return conns
}

// connLost is called by c's reader once it stopped: the requests c held go
// back to pending, in submission order.
func (d *Device) connLost(c *conn, err error) {
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("the server closed the connection: %w", io.EOF)
	}
	d.mu.Lock()
	conns := d.failLocked(c, err)
	moved := false
	for i := range d.slots {
		r := &d.slots[i]
		if r.state == stateInflight && r.conn == c {
			r.state, r.conn = statePending, nil
			r.result, r.covered = nil, 0
			d.mu.inflight--
			d.mu.pending = append(d.mu.pending, r)
			r.wakeUp()
			moved = true
		}
	}
	if moved {
		slices.SortFunc(d.mu.pending, func(a, b *request) int { return cmpSeq(a.seq, b.seq) })
	}
	if d.mu.replayReq != nil && d.mu.replayReq.state != stateInflight {
		d.mu.replayReq = nil
	}
	if d.mu.state == StateClosed || d.mu.state == StateLost {
		d.failPendingLocked(d.terminalErrLocked())
	}
	close(c.dead)
	d.mu.Unlock()
	for _, x := range conns {
		x.abort()
	}
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (d *Device) terminalErrLocked() error {
	if d.mu.state == StateLost {
		return ErrLost
	}
	return errClosed
}

// reconnectLoop re-establishes the session: at once, then every
// reconnect_delay, until it succeeds, the device is closed, or
// ctrlr_loss_timeout since the loss ran out. It first waits for the lost
// session's readers to hand their requests back, so that nothing is
// replayed before them.
func (d *Device) reconnectLoop(lost []*conn) {
	defer d.reconnector.Done()
	for _, c := range lost {
		<-c.dead
	}
	delay := time.NewTimer(0)
	defer delay.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-delay.C:
		}
		d.mu.Lock()
		if d.mu.state != StateReconnecting {
			d.mu.Unlock()
			return
		}
		if !d.opts.forever() && time.Since(d.mu.lostAt) >= d.opts.CtrlrLossTimeout {
			d.giveUpLocked()
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		err := d.reconnect()
		if err == nil {
			return
		}
		d.mu.Lock()
		d.mu.lastErr = err
		d.mu.Unlock()
		d.event("reconnect failed", err)
		delay.Reset(d.opts.ReconnectDelay)
	}
}

// giveUpLocked ends the device's life after ctrlr_loss_timeout: waiting
// requests fail, and the owner is told to remove the device.
func (d *Device) giveUpLocked() {
	d.mu.state = StateLost
	d.failPendingLocked(ErrLost)
	d.event("gave up on the server", d.mu.lastErr)
	if d.opts.OnLost != nil {
		go d.opts.OnLost()
	}
}

// reconnect dials a session and replays pending on it. It returns nil once
// the device is connected again (or closed).
func (d *Device) reconnect() error {
	timeout := d.opts.IOTimeout
	if timeout == 0 {
		timeout = DefaultIOTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-d.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var conns []*conn
	closeAll := func() {
		for _, c := range conns {
			c.abort()
		}
	}
	for len(conns) < d.nconns {
		nc, br, ex, err := dialConn(ctx, d.uri, timeout)
		if err != nil {
			closeAll()
			return err
		}
		bs, nblocks, _, gerr := ex.geometry()
		if gerr == nil && (bs != d.info.BlockSize || nblocks != d.info.NumBlocks || ex.flags != d.flags) {
			gerr = fmt.Errorf("the export changed: %d blocks of %d bytes, flags %v; was %d of %d, flags %v: %w",
				nblocks, bs, ex.flags, d.info.NumBlocks, d.info.BlockSize, d.flags, ErrProtocol)
		}
		if gerr != nil {
			nc.Close()
			closeAll()
			return gerr
		}
		conns = append(conns, newConn(d, nc, br, ex.structured))
	}
	// Every connection of the sessions before is stopped: nothing more
	// will be acknowledged on them.
	d.mu.Lock()
	d.sessionEndedLocked()
	d.mu.Unlock()
	for _, c := range conns {
		c.startReading()
	}
	if !d.replay(conns[0]) {
		d.mu.Lock()
		why := conns[0].err
		for _, c := range conns {
			d.failLocked(c, errReplayAborted)
		}
		d.mu.Unlock()
		closeAll()
		for _, c := range conns {
			<-c.dead
		}
		d.mu.Lock()
		closed := d.mu.state == StateClosed
		d.mu.Unlock()
		if closed {
			return nil
		}
		if why != nil {
			return fmt.Errorf("%w: %w", errReplayAborted, why)
		}
		return errReplayAborted
	}
	if d.mu.state != StateReconnecting || slices.ContainsFunc(conns, func(c *conn) bool { return c.failed }) {
		for _, c := range conns {
			d.failLocked(c, errReplayAborted)
		}
		d.mu.Unlock()
		closeAll()
		for _, c := range conns {
			<-c.dead
		}
		return errReplayAborted
	}
	d.mu.session = conns
	d.mu.replaying = nil
	d.mu.state = StateConnected
	d.mu.lastErr = nil
	// Requests submitted during the replay go out now, as submit would
	// have sent them.
	now := time.Now()
	later := d.mu.pending
	d.mu.pending = nil
	on := make([]*conn, len(later))
	for i, r := range later {
		on[i] = conns[d.mu.rr%len(conns)]
		d.mu.rr++
		d.startLocked(r, on[i], now)
		r.wakeUp()
	}
	d.mu.Unlock()
	d.reconnects.Add(1)
	d.event("reconnected", nil)
	for i, r := range later {
		if err := on[i].send(r); err != nil {
			d.fail(on[i], err)
		}
	}
	return nil
}

var (
	errReplayAborted = errors.New("the new connection failed while resending requests")
	errClosed        = fmt.Errorf("device closed while waiting for the connection: %w", net.ErrClosed)
)

// replay sends pending requests on c one at a time, oldest first, each
// after the previous one's reply. It returns true, with d.mu held so that
// the caller can go back to connected before anything else queues, once
// pending is empty with nothing it sent still in flight; false if c or the
// device stopped.
func (d *Device) replay(c *conn) bool {
	var t *time.Timer
	if d.opts.IOTimeout > 0 {
		t = time.NewTimer(d.opts.IOTimeout)
		defer t.Stop()
	}
	// Only what waits now is replayed one by one: requests submitted
	// meanwhile are newer than all of it, and go out normally once it is
	// done (a steady stream of them would otherwise keep the replay going).
	d.mu.Lock()
	var last uint64
	if n := len(d.mu.pending); n > 0 {
		last = d.mu.pending[n-1].seq
	}
	d.mu.Unlock()
	for {
		d.mu.Lock()
		if d.mu.state != StateReconnecting || c.failed {
			d.mu.Unlock()
			return false
		}
		d.mu.replaying = c
		if len(d.mu.pending) == 0 || d.mu.pending[0].seq > last {
			return true // with d.mu held
		}
		r := d.mu.pending[0]
		d.mu.pending = d.mu.pending[1:]
		d.startLocked(r, c, time.Now())
		d.mu.replayReq = r
		select {
		case <-d.replayDone:
		default:
		}
		r.wakeUp()
		d.mu.Unlock()

		if err := c.send(r); err != nil {
			d.fail(c, err)
			return false
		}
		var tc <-chan time.Time
		if t != nil {
			t.Reset(d.opts.IOTimeout)
			tc = t.C
		}
		select {
		case <-d.replayDone:
		case <-c.dead:
			return false
		case <-d.stop:
			return false
		case <-tc:
			d.fail(c, fmt.Errorf("resent %s at offset %d got no reply in %v: %w", cmdName(r.cmd), r.off, d.opts.IOTimeout, ErrTimeout))
			return false
		}
	}
}

// event reports a connection change to Options.OnEvent.
func (d *Device) event(msg string, err error) {
	if d.opts.OnEvent != nil {
		d.opts.OnEvent(msg, err)
	}
}
