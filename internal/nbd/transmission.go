package nbd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/nbdproto"
)

// job is one admitted request: its header, its payload buffer and its
// reply. Jobs are pooled per server so that the hot path does not allocate.
type job struct {
	req  nbdproto.Request
	held int64   // payload bytes counted against the limiter and the budget
	buf  *[]byte // WRITE payload or READ data, from Server.bufs; nil otherwise
	hdr  [nbdproto.ChunkLen + 8]byte
	vec  [2][]byte // the reply: header (or error chunk), then READ data
}

func (s *Server) getJob() *job { return s.jobs.Get().(*job) }

func (s *Server) putJob(j *job) {
	if j.buf != nil {
		s.bufs.put(j.buf)
	}
	*j = job{}
	s.jobs.Put(j)
}

// finish recycles an answered (or abandoned) job and releases its slot.
func (c *conn) finish(j *job) {
	held := j.held
	c.srv.putJob(j)
	c.unhold(held)
	c.inflight.Done()
}

// hold admits a request holding payload bytes: a slot and the bytes in the
// connection's limiter, then the bytes in the server's budget. While
// either is full it flushes the replies held back (their slots and bytes
// are released only once written) and waits, reading nothing. It returns
// false, holding nothing, if beginClose ended the wait for the budget.
// Only the holder of the turn calls it.
func (c *conn) hold(payload int64) bool {
	if !c.limit.tryAcquire(payload) {
		c.flush()
		c.limit.acquire(payload)
	}
	if payload == 0 || c.srv.budget.tryAcquire(payload) {
		return true
	}
	c.flush()
	if !c.srv.budget.acquire(payload, c.closed) {
		c.limit.release(payload)
		return false
	}
	return true
}

// unhold releases what hold took.
func (c *conn) unhold(payload int64) {
	if payload > 0 && c.srv.budget.release(payload) == 0 {
		c.srv.trim.becameIdle()
	}
	c.limit.release(payload)
}

// transmit serves requests until the client disconnects, the stream breaks,
// or beginClose stops it, and returns why reading stopped. Requests in
// flight may still be executing when it returns.
//
// The connection is served by a set of goroutines in the leader/follower
// pattern of nbdkit's worker threads: one of them at a time holds the
// reading turn and reads a request. Invalid requests it answers itself,
// after draining a WRITE's payload so that the stream stays in sync. A
// valid one it either
//
//   - executes and answers it itself, keeping the turn ("inline"), when the
//     device can serve it without waiting (bdev.TryReader, bdev.TryWriter:
//     memory, or a cache hit) and answers fast: a cache hit takes a
//     microsecond or two, far less than waking another goroutine and, on a
//     small machine, than the CPU the runtime's scheduler would take from
//     the client doing it. The replies to requests that arrived together
//     are then written together (see send). A request that may wait (a
//     cache miss, a write through to the core, any flush) is never executed
//     inline, so that it cannot hold up the requests read after it; or
//   - passes the turn to an idle goroutine (starting one if none is idle)
//     and then executes and answers the request, while the next one is
//     already being read; replies go out in completion order. So a slow
//     request never holds up the ones sent after it. While other
//     handed-off requests are in flight, its reply waits for one yield of
//     the CPU before it is written (see sendYielding), so that replies
//     completing together share a writev.
//
// A WRITE's payload is read into the job's buffer, which goes to the
// device as it is: beyond what the reader had buffered already, a large
// payload never passes through the reader's buffer (see readBody), so the
// kernel's copy out of the socket is the only one before the device.
//
// A request executed inline that takes longer than inlineFast makes the
// connection pass the turn for the next inlineBackoff requests or more
// (see inlineOK). One that takes far longer (blocked in the device, or its
// reply blocked on a client that does not read) has the turn taken from it
// by a watchdog (see watchdog) after one to two inlinePeriods.
//
// The goroutines are started on demand and kept until transmission ends,
// so a steady load starts none and allocates nothing per request; there are
// at most about maxInflightRequests of them, since the limiter bounds the
// busy ones. The connection's own goroutine is the first reader.
func (c *conn) transmit() error {
	c.turn = make(chan struct{})
	c.ended = make(chan error, 1)
	c.inline.timer = time.AfterFunc(time.Hour, c.watchdog)
	c.inline.timer.Stop()
	defer c.inline.timer.Stop()
	c.inline.backoff = inlineBackoff
	c.follow(true)
	return <-c.ended
}

// Inline execution (see transmit).
const (
	// inlineFast is the longest a request may take in the device for the
	// next ones to be executed inline too. A 4 KiB cache hit on memory takes
	// about a microsecond, a 128 KiB one about ten; an SSD read at least
	// tens of microseconds, during which other requests should proceed.
	inlineFast = 50 * time.Microsecond
	// inlineBackoff is how many requests a connection passes the turn for
	// after an inline request was slow; it doubles, up to maxInlineBackoff,
	// while inline requests keep being slow, so that a slow device is
	// hardly ever made to serve requests one at a time.
	inlineBackoff    = 64
	maxInlineBackoff = 64 << 10
	// inlinePeriod is the watchdog's period: a request executed inline
	// keeps the requests after it from being read for less than two
	// periods. A timer per request would cost more than the request
	// (arming one wakes the runtime's poller); one per period costs little.
	inlinePeriod = time.Millisecond
)

// follow is the life of one of the connection's goroutines: wait for the
// reading turn (unless it starts with it), read a request, execute and
// answer it, passing the turn on first unless executing inline; until
// reading ends.
func (c *conn) follow(haveTurn bool) {
	for {
		if !haveTurn {
			if _, ok := <-c.turn; !ok {
				return // reading ended
			}
		}
		haveTurn = false
		j, err := c.next()
		if err != nil {
			c.flush()      // replies held back by inline requests
			c.ended <- err // the one goroutine that ends reading
			close(c.turn)  // wakes the idle ones, which exit
			return
		}
		if c.inlineOK() {
			executed, kept := c.handleInline(j)
			if executed {
				haveTurn = kept
				continue
			}
			if !kept {
				c.handle(j) // the watchdog passed the turn on already
				continue
			}
		}
		c.passTurn()
		c.handle(j)
	}
}

// passTurn hands the reading turn to an idle goroutine, or to a new one.
// Only the holder of the turn calls it.
func (c *conn) passTurn() {
	select {
	case c.turn <- struct{}{}:
	default:
		go c.follow(true)
	}
}

// inlineOK reports whether the request just read is to be executed inline:
// no inline request was slow lately. Only the holder of the turn calls it.
func (c *conn) inlineOK() bool {
	if c.inline.skip > 0 {
		c.inline.skip--
		return false
	}
	return true
}

// handleInline executes and answers j while holding the turn, under the
// watchdog, if the device can serve it without waiting (see bdev.TryReader):
// a request that may wait for a slower device, or for a lock another request
// holds across such IO, must not hold up the requests behind it. The reply
// is held back while another request is already buffered, to go out with
// the replies to the next requests (flushed at the latest before next would
// block). handleInline reports whether it executed j, and whether the
// caller still holds the turn, that is whether the watchdog did not take it.
func (c *conn) handleInline(j *job) (executed, haveTurn bool) {
	if !c.canTry(j.req.Type) {
		return false, true
	}
	hold := c.br.Buffered() >= nbdproto.RequestLen // while the turn is surely ours
	c.inline.seq++
	id := c.inline.seq
	c.inline.running.Store(id)
	if c.inline.armed.CompareAndSwap(false, true) {
		c.inline.timer.Reset(c.srv.inlinePeriod)
	}
	start := time.Now()
	executed, ok := c.prepare(j, true)
	took := time.Since(start)
	switch {
	case !ok:
		c.finish(j)
	case executed:
		c.send(j, hold)
	}
	if !c.inline.running.CompareAndSwap(id, 0) {
		// The watchdog took the turn (and set the backoff), and maybe
		// flushed before j was queued.
		if hold && executed {
			c.flush()
		}
		return executed || !ok, false
	}
	if took > inlineFast {
		c.inline.skip = c.inline.backoff
		c.inline.backoff = min(2*c.inline.backoff, maxInlineBackoff)
	} else {
		c.inline.backoff = inlineBackoff
	}
	return executed || !ok, true
}

// canTry reports whether requests of type typ may be tried inline: the
// export's device can tell whether it would serve them without waiting.
func (c *conn) canTry(typ nbdproto.Command) bool {
	switch typ {
	case nbdproto.CmdRead:
		return c.ex.tryRead
	case nbdproto.CmdWrite:
		return c.ex.tryWrite
	}
	return false
}

// watchdog runs every inlinePeriod while requests are executed inline. One
// that it finds running on two calls in a row has run for at least a
// period: it takes the turn from the goroutine executing it, passes it on,
// and writes the replies that goroutine held back. With no inline request
// running it stops until the next one arms it again.
func (c *conn) watchdog() {
	id := c.inline.running.Load()
	if id != 0 && id == c.inline.seen.Load() && c.inline.running.CompareAndSwap(id, 0) {
		// The turn is now ours: its holder is busy with its request, and
		// will not read again before it receives the turn from the channel.
		c.inline.skip = c.inline.backoff
		c.inline.backoff = min(2*c.inline.backoff, maxInlineBackoff)
		c.passTurn()
		c.flush()
		id = 0
	}
	c.inline.seen.Store(id)
	if id != 0 {
		c.inline.timer.Reset(c.srv.inlinePeriod)
		return
	}
	// Disarm; but a request that started meanwhile may have found the
	// timer armed and not armed it: look again.
	c.inline.armed.Store(false)
	if c.inline.running.Load() != 0 && c.inline.armed.CompareAndSwap(false, true) {
		c.inline.timer.Reset(c.srv.inlinePeriod)
	}
}

// next reads requests until one is admitted, which it returns as a job
// counted in c.inflight, answering invalid ones itself. An error means that
// reading is over: a disconnect, a broken stream, or a panic (after which
// the socket is closed).
func (c *conn) next() (j *job, err error) {
	defer func() {
		if p := recover(); p != nil {
			j, err = nil, c.panicked(p) // logged before the client sees the close
			c.nc.Close()
		}
	}()
	for {
		if c.br.Buffered() < nbdproto.RequestLen {
			c.flush() // about to wait for the client: send what is held back
		}
		if err := c.readHeader(); err != nil {
			return nil, c.readError(err)
		}
		req, err := nbdproto.ParseRequest(&c.hb)
		if err != nil {
			return nil, err // out of sync: hard disconnect
		}
		if req.Type == nbdproto.CmdDisc {
			return nil, errDisconnect
		}
		if err := validate(req, c.ex, c.structured); err != nil {
			if req.Type == nbdproto.CmdWrite {
				if err := c.readPayload(int(req.Length), func() error {
					_, err := c.br.Discard(int(req.Length))
					return err
				}); err != nil {
					return nil, err
				}
			}
			c.srv.log.Debug("nbd request rejected", "remote", c.remote, "cmd", req.Type,
				"flags", req.Flags, "offset", req.Offset, "length", req.Length, "err", err)
			if err := c.replyError(req, err); err != nil {
				c.fail(err)
				return nil, err
			}
			continue
		}

		held := payloadBytes(req)
		if !c.hold(held) {
			return nil, errClosedBySrv
		}
		j := c.srv.getJob()
		j.req = req
		if req.Type == nbdproto.CmdWrite {
			j.buf = c.srv.bufs.get(int(req.Length))
			if err := c.readPayload(len(*j.buf), func() error {
				return c.readBody(*j.buf)
			}); err != nil {
				c.srv.putJob(j)
				c.unhold(held)
				return nil, err
			}
		}
		c.largeWrite = req.Type == nbdproto.CmdWrite && req.Length >= largeWrite
		c.requests.Add(1)
		c.inflight.Add(1)
		j.held = held
		return j, nil
	}
}

// readPayload runs read, which consumes a WRITE's payload of n bytes. If
// the payload is not buffered yet, it first sends the replies held back
// (the client may wait for them) and gives the client the payload timeout
// to send it; a client that takes longer is disconnected. The error says
// why reading failed, as readError does.
func (c *conn) readPayload(n int, read func() error) error {
	if c.br.Buffered() >= n {
		return c.readError(read())
	}
	c.flush()
	timeout := c.srv.opts.PayloadTimeout
	c.setReadDeadline(time.Now().Add(timeout))
	err := read()
	c.setReadDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) && !c.closing() {
		return fmt.Errorf("%w (%v): %d-byte payload", errSlowPayload, timeout, n)
	}
	return c.readError(err)
}

// largeWrite is the payload size from which a WRITE's payload is read past
// the reader's buffer (see readHeader).
const largeWrite = 32 << 10

// readBody fills p with a WRITE's payload. A small one is read through the
// reader's buffer, which may take the next requests along in the same
// system call. Of a large one only what the buffer already holds is copied
// from it; the rest goes from the socket straight into p, never through
// the buffer (where a short read would otherwise leave the payload's tail,
// with the next request, to be copied out again).
func (c *conn) readBody(p []byte) error {
	if len(p) < largeWrite {
		_, err := io.ReadFull(c.br, p)
		return err
	}
	n := 0
	if b := c.br.Buffered(); b > 0 {
		n, _ = c.br.Read(p[:min(b, len(p))]) // buffered bytes only: no read from the socket
	}
	_, err := io.ReadFull(c.src, p[n:])
	return err
}

// readHeader reads the next request's header into c.hb. After a large
// WRITE, with nothing buffered, it reads the header alone from the socket:
// another large WRITE likely follows, and a buffered read would take up to
// a buffer's worth of its payload along, to be copied out again; read
// apart, the payload goes from the socket straight into the job's buffer.
//
// Unless after a large WRITE, a read of an empty socket polls it for
// readSpin first.
func (c *conn) readHeader() error {
	if c.largeWrite && c.br.Buffered() == 0 {
		_, err := io.ReadFull(c.src, c.hb[:])
		return err
	}
	c.setSpin(readSpin)
	_, err := io.ReadFull(c.br, c.hb[:])
	c.setSpin(0)
	return err
}

// payloadBytes is the buffer a request holds while in flight.
func payloadBytes(r nbdproto.Request) int64 {
	if r.Type == nbdproto.CmdRead || r.Type == nbdproto.CmdWrite {
		return int64(r.Length)
	}
	return 0
}

// validate checks a request against the export and the negotiated options,
// in one place, so that execute can trust it (nbdkit's validate_request).
// The error wraps the errno the client receives.
func validate(r nbdproto.Request, ex *export, structured bool) error {
	switch r.Type {
	case nbdproto.CmdRead, nbdproto.CmdFlush:
	case nbdproto.CmdWrite, nbdproto.CmdTrim, nbdproto.CmdWriteZeroes:
		if ex.ReadOnly {
			return errReadOnly
		}
		if r.Type == nbdproto.CmdTrim && ex.flags&nbdproto.TxSendTrim == 0 {
			return errUnknownCommand
		}
	default:
		return errUnknownCommand
	}
	if r.Flags&^allowedFlags(r.Type, ex.flags, structured) != 0 {
		return errBadFlags
	}
	if r.Type == nbdproto.CmdFlush {
		if r.Offset != 0 || r.Length != 0 {
			return errFlushRange
		}
		return nil
	}
	if (r.Type == nbdproto.CmdRead || r.Type == nbdproto.CmdWrite) && r.Length > maxPayloadBytes {
		return errTooLarge
	}
	if r.Length == 0 {
		return errZeroLength
	}
	bs := uint64(ex.minBlock)
	if r.Offset%bs != 0 || uint64(r.Length)%bs != 0 {
		return errMisaligned
	}
	if r.Offset > ex.size || uint64(r.Length) > ex.size-r.Offset {
		if r.Type == nbdproto.CmdRead {
			return errReadPastEnd
		}
		return errWritePastEnd
	}
	return nil
}

// allowedFlags returns the command flags valid on typ. FUA is valid on every
// command once advertised (the spec asks servers to accept it even where it
// means nothing); DF only on READ with structured replies.
func allowedFlags(typ nbdproto.Command, flags nbdproto.TxFlags, structured bool) nbdproto.CmdFlags {
	var f nbdproto.CmdFlags
	if flags&nbdproto.TxSendFUA != 0 {
		f |= nbdproto.CmdFlagFUA
	}
	switch typ {
	case nbdproto.CmdWriteZeroes:
		f |= nbdproto.CmdFlagNoHole
	case nbdproto.CmdRead:
		if structured {
			f |= nbdproto.CmdFlagDF
		}
	}
	return f
}

// handle executes one admitted request and sends its reply, which
// finishes the job. A panic closes the connection (the request will never
// be answered) and is logged.
func (c *conn) handle(j *job) {
	c.srv.handedOff.Add(1)
	defer c.srv.handedOff.Add(-1)
	c.handedOff.Add(1)
	if _, ok := c.prepare(j, false); ok {
		c.sendYielding(j)
	} else {
		c.handedOff.Add(-1)
		c.finish(j)
	}
}

// prepare executes j and lays out its reply; ok is false if that panicked.
// With try it executes j only if the device serves it without waiting, and
// reports in executed whether it did; otherwise j is left as it was, to be
// prepared again without try.
func (c *conn) prepare(j *job, try bool) (executed, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			c.panicked(p) // logged before the client sees the close
			c.nc.Close()  // end the session
			ok = false
		}
	}()
	executed, err := c.executeTimed(j, try)
	if !executed {
		return false, true
	}
	if err != nil {
		c.srv.log.Debug("nbd request failed", "remote", c.remote, "cmd", j.req.Type,
			"offset", j.req.Offset, "length", j.req.Length, "err", err)
	}
	c.prepareReply(j, err)
	return true, true
}

// execute performs a validated request on the device; with try only if the
// device can serve it at once (a READ or WRITE; see bdev.TryReader), and
// reports whether it did. A READ leaves its data in j.buf.
func (c *conn) execute(j *job, try bool) (executed bool, err error) {
	dev := c.ex.Device
	off, n := int64(j.req.Offset), int64(j.req.Length)
	fua := j.req.Flags&nbdproto.CmdFlagFUA != 0
	switch j.req.Type {
	case nbdproto.CmdRead:
		if j.buf == nil {
			j.buf = c.srv.bufs.get(int(n))
		}
		if try {
			return bdev.TryReadAt(dev, *j.buf, off)
		}
		return true, dev.ReadAt(*j.buf, off)
	case nbdproto.CmdWrite:
		if try {
			return bdev.TryWriteAt(dev, *j.buf, off, fua)
		}
		return true, dev.WriteAt(*j.buf, off, fua)
	}
	if try {
		return false, nil
	}
	switch j.req.Type {
	case nbdproto.CmdFlush:
		return true, dev.Flush()
	case nbdproto.CmdTrim:
		err := bdev.Discard(dev, off, n)
		if err == nil && fua {
			err = dev.Flush()
		}
		return true, err
	case nbdproto.CmdWriteZeroes:
		// NBD_CMD_FLAG_NO_HOLE needs nothing: this server never reports
		// holes, and whether the device deallocates is its own business.
		return true, c.writeZeroes(off, n, fua)
	}
	return true, errUnknownCommand // validate admits nothing else
}

// writeZeroes zeroes a range with the device's WriteZeroes, or by writing a
// shared zero buffer when the device's Abilities lack it.
func (c *conn) writeZeroes(off, n int64, fua bool) error {
	dev := c.ex.Device
	if !dev.Info().Abilities.WriteZeroes {
		z := c.srv.zeroes()
		for done := int64(0); done < n; {
			step := min(int64(len(z)), n-done)
			if err := dev.WriteAt(z[:step], off+done, fua); err != nil {
				return err
			}
			done += step
		}
		return nil
	}
	err := bdev.WriteZeroes(dev, off, n)
	if err == nil && fua {
		err = dev.Flush()
	}
	return err
}
