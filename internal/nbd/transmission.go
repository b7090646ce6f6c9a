package nbd

import (
	"errors"
	"io"
	"net"

	"blockcache/internal/bdev"
)

// job is one admitted request: its header, its payload buffer and scratch
// space for its reply. Jobs are pooled per server so that the hot path does
// not allocate.
type job struct {
	req  requestHeader
	held int64   // payload bytes counted against the connection's limiter
	buf  *[]byte // WRITE payload or READ data, from Server.bufs; nil otherwise
	hdr  [structuredReplyLen + 8]byte
	vec  [2][]byte
	bufs net.Buffers
}

func (s *Server) getJob() *job { return s.jobs.Get().(*job) }

func (s *Server) putJob(j *job) {
	if j.buf != nil {
		s.bufs.put(j.buf)
	}
	*j = job{}
	s.jobs.Put(j)
}

// transmit reads requests until the client disconnects, the stream breaks,
// or beginClose stops it. Each valid request is handed to a worker
// goroutine, so the next request is read while earlier ones execute, and
// replies go out in completion order. Invalid requests are answered here,
// after draining a WRITE's payload so that the stream stays in sync.
func (c *conn) transmit() error {
	var hb [requestHeaderLen]byte
	for {
		if _, err := io.ReadFull(c.br, hb[:]); err != nil {
			return c.readError(err)
		}
		req, err := parseRequest(&hb)
		if err != nil {
			return err // out of sync: hard disconnect
		}
		if req.typ == cmdDisc {
			return errDisconnect
		}
		if err := validate(req, c.ex, c.structured); err != nil {
			if req.typ == cmdWrite {
				if _, err := c.br.Discard(int(req.length)); err != nil {
					return c.readError(err)
				}
			}
			c.srv.log.Debug("nbd request rejected", "remote", c.remote, "cmd", req.typ,
				"flags", req.flags, "offset", req.offset, "length", req.length, "err", err)
			if err := c.replyError(req, err); err != nil {
				c.fail(err)
				return err
			}
			continue
		}

		held := payloadBytes(req)
		c.limit.acquire(held)
		j := c.srv.getJob()
		j.req = req
		if req.typ == cmdWrite {
			j.buf = c.srv.bufs.get(int(req.length))
			if _, err := io.ReadFull(c.br, *j.buf); err != nil {
				c.srv.putJob(j)
				c.limit.release(held)
				return c.readError(err)
			}
		}
		c.requests.Add(1)
		c.inflight.Add(1)
		j.held = held
		select {
		case c.work <- j: // an idle worker took it
		default:
			go c.worker(j) // at most maxInflightRequests exist: the limiter bounds busy ones
		}
	}
}

// worker runs jobs of one connection until transmission ends. Workers are
// started on demand and then kept, so a steady load starts no goroutines
// and allocates nothing per request.
func (c *conn) worker(j *job) {
	for ; j != nil; j = <-c.work {
		c.handle(j)
	}
}

// payloadBytes is the buffer a request holds while in flight.
func payloadBytes(r requestHeader) int64 {
	if r.typ == cmdRead || r.typ == cmdWrite {
		return int64(r.length)
	}
	return 0
}

// validate checks a request against the export and the negotiated options,
// in one place, so that execute can trust it (nbdkit's validate_request).
// The error wraps the errno the client receives.
func validate(r requestHeader, ex *export, structured bool) error {
	switch r.typ {
	case cmdRead, cmdFlush:
	case cmdWrite, cmdTrim, cmdWriteZeroes:
		if ex.ReadOnly {
			return errReadOnly
		}
		if r.typ == cmdTrim && ex.flags&txSendTrim == 0 {
			return errUnknownCommand
		}
	default:
		return errUnknownCommand
	}
	if r.flags&^allowedFlags(r.typ, ex.flags, structured) != 0 {
		return errBadFlags
	}
	if r.typ == cmdFlush {
		if r.offset != 0 || r.length != 0 {
			return errFlushRange
		}
		return nil
	}
	if (r.typ == cmdRead || r.typ == cmdWrite) && r.length > maxPayloadBytes {
		return errTooLarge
	}
	if r.length == 0 {
		return errZeroLength
	}
	bs := uint64(ex.minBlock)
	if r.offset%bs != 0 || uint64(r.length)%bs != 0 {
		return errMisaligned
	}
	if r.offset > ex.size || uint64(r.length) > ex.size-r.offset {
		if r.typ == cmdRead {
			return errReadPastEnd
		}
		return errWritePastEnd
	}
	return nil
}

// allowedFlags returns the command flags valid on typ. FUA is valid on every
// command once advertised (the spec asks servers to accept it even where it
// means nothing); DF only on READ with structured replies.
func allowedFlags(typ command, flags txFlags, structured bool) cmdFlags {
	var f cmdFlags
	if flags&txSendFUA != 0 {
		f |= cmdFlagFUA
	}
	switch typ {
	case cmdWriteZeroes:
		f |= cmdFlagNoHole
	case cmdRead:
		if structured {
			f |= cmdFlagDF
		}
	}
	return f
}

// handle executes one admitted request and answers it.
func (c *conn) handle(j *job) {
	defer func() {
		if p := recover(); p != nil {
			c.nc.Close() // the request will never be answered: end the session
			c.panicked(p)
		}
		held := j.held
		c.srv.putJob(j)
		c.limit.release(held)
		c.inflight.Done()
	}()
	err := c.execute(j)
	if err != nil {
		c.srv.log.Debug("nbd request failed", "remote", c.remote, "cmd", j.req.typ,
			"offset", j.req.offset, "length", j.req.length, "err", err)
	}
	if err := c.reply(j, err); err != nil {
		c.fail(err)
	}
}

// execute performs a validated request on the device. A READ leaves its
// data in j.buf.
func (c *conn) execute(j *job) error {
	dev := c.ex.Device
	off, n := int64(j.req.offset), int64(j.req.length)
	fua := j.req.flags&cmdFlagFUA != 0
	switch j.req.typ {
	case cmdRead:
		j.buf = c.srv.bufs.get(int(n))
		return dev.ReadAt(*j.buf, off)
	case cmdWrite:
		return dev.WriteAt(*j.buf, off, fua)
	case cmdFlush:
		return dev.Flush()
	case cmdTrim:
		err := bdev.Discard(dev, off, n)
		if err == nil && fua {
			err = dev.Flush()
		}
		return err
	case cmdWriteZeroes:
		// NBD_CMD_FLAG_NO_HOLE needs nothing: this server never reports
		// holes, and whether the device deallocates is its own business.
		return c.writeZeroes(off, n, fua)
	}
	return errUnknownCommand // validate admits nothing else
}

// writeZeroes zeroes a range with the device's WriteZeroes, or by writing a
// shared zero buffer when the device has none.
func (c *conn) writeZeroes(off, n int64, fua bool) error {
	dev := c.ex.Device
	err := bdev.WriteZeroes(dev, off, n)
	if errors.Is(err, bdev.ErrNotSupported) {
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
	if err == nil && fua {
		err = dev.Flush()
	}
	return err
}
