package nbd

import (
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"strings"
	"time"

	"blockcache/internal/nbdproto"
)

// maxErrorMessage bounds the human-readable message of an error chunk.
const maxErrorMessage = 1024

// prepareReply lays out the reply to an executed request in j.vec. Without
// structured replies a READ gets a simple reply followed by its data; with
// them, a single OFFSET_DATA chunk flagged DONE (so NBD_CMD_FLAG_DF always
// holds). Other successful requests get a simple reply, which the spec
// allows in either mode.
func (c *conn) prepareReply(j *job, err error) {
	if err != nil {
		j.vec = [2][]byte{c.errorReply(j.hdr[:], j.req, err), nil}
		return
	}
	if j.req.Type != nbdproto.CmdRead {
		nbdproto.PutSimpleReply(j.hdr[:], nbdproto.SimpleReply{Cookie: j.req.Cookie})
		j.vec = [2][]byte{j.hdr[:nbdproto.SimpleReplyLen], nil}
		return
	}
	data := *j.buf
	var h []byte
	if c.structured {
		nbdproto.PutChunk(j.hdr[:], nbdproto.Chunk{Flags: nbdproto.ReplyFlagDone, Type: nbdproto.ReplyTypeOffsetData, Cookie: j.req.Cookie, Length: uint32(8 + len(data))})
		binary.BigEndian.PutUint64(j.hdr[nbdproto.ChunkLen:], j.req.Offset)
		h = j.hdr[:nbdproto.ChunkLen+8]
	} else {
		nbdproto.PutSimpleReply(j.hdr[:], nbdproto.SimpleReply{Cookie: j.req.Cookie})
		h = j.hdr[:nbdproto.SimpleReplyLen]
	}
	j.vec = [2][]byte{h, data}
}

// errorReply returns the reply to a request failed with errnoFor(err): a
// simple reply (in scratch, at least simpleReplyLen long), or with
// structured replies an NBD_REPLY_TYPE_ERROR chunk carrying err's text,
// which the spec prefers and requires for READ.
func (c *conn) errorReply(scratch []byte, r nbdproto.Request, err error) []byte {
	errno := errnoFor(err)
	if !c.structured {
		nbdproto.PutSimpleReply(scratch, nbdproto.SimpleReply{Errno: errno, Cookie: r.Cookie})
		return scratch[:nbdproto.SimpleReplyLen]
	}
	msg := err.Error()
	if len(msg) > maxErrorMessage {
		msg = strings.ToValidUTF8(msg[:maxErrorMessage], "")
	}
	b := make([]byte, nbdproto.ChunkLen+6+len(msg))
	nbdproto.PutChunk(b, nbdproto.Chunk{Flags: nbdproto.ReplyFlagDone, Type: nbdproto.ReplyTypeError, Cookie: r.Cookie, Length: uint32(6 + len(msg))})
	binary.BigEndian.PutUint32(b[nbdproto.ChunkLen:], errno)
	binary.BigEndian.PutUint16(b[nbdproto.ChunkLen+4:], uint16(len(msg)))
	copy(b[nbdproto.ChunkLen+6:], msg)
	return b
}

// replyError answers a rejected request (one that never became a job) at
// once, from the reading goroutine.
func (c *conn) replyError(r nbdproto.Request, err error) error {
	var scratch [nbdproto.SimpleReplyLen]byte
	return c.write(c.errorReply(scratch[:], r, err))
}

// errBroken is returned for replies after one failed: the stream may hold
// a partial reply, so nothing more can be sent.
var errBroken = errors.New("nbd: connection broken by an earlier failed reply")

// write sends one whole reply under the write lock.
func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.broken.Load() {
		return errBroken
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.replyTimeout))
	_, err := c.nc.Write(b)
	return err
}

// send queues the reply laid out in j.vec and takes ownership of j: the job
// is finished (its buffer recycled, its limiter slot released) once the
// reply has been written or has failed. With hold, the reply is only
// queued: the caller promises a flush (or another send) soon.
//
// Replies are combined: the goroutine that finds nobody writing becomes the
// writer and sends everything queued with one writev, again and again until
// the queue is empty; replies that complete meanwhile are queued behind it
// and their goroutines go back to work at once. Under load this turns one
// syscall per reply into one per batch; alone (one request in flight) the
// request's own goroutine writes its reply directly.
func (c *conn) send(j *job, hold bool) {
	c.out.Lock()
	c.out.queue = append(c.out.queue, j)
	if hold || c.out.writing {
		c.out.Unlock()
		return
	}
	c.writeQueued()
}

// sendYielding is send for a request that was handed off (see transmit).
// Replies are batched as well as a handed-off request allows without
// keeping others waiting for it:
//
//   - Queued replies with nobody writing carry a promise of a flush (see
//     send): the reply joins them, and goes out in their writev.
//   - If other handed-off requests are in flight, the reply is queued and
//     its goroutine lets the goroutines that are ready to run have the CPU
//     before it flushes: the replies of handed-off requests completing at
//     the same time (cache misses whose core IO ended together) then join
//     it, written by whichever goroutine writes first. Without the yield,
//     on one scheduler slot each such goroutine would run its writev to
//     the end before the next could queue a reply, and every miss would
//     cost a syscall of its own. It is not the writer while it yields, so
//     replies completing meanwhile are never held back by it.
//   - Otherwise there is nothing to batch, and it writes at once.
func (c *conn) sendYielding(j *job) {
	others := c.handedOff.Add(-1) > 0
	c.out.Lock()
	c.out.queue = append(c.out.queue, j)
	if c.out.writing || len(c.out.queue) > 1 {
		c.out.Unlock()
		return
	}
	if !others {
		c.writeQueued()
		return
	}
	c.out.Unlock()
	runtime.Gosched()
	c.flush()
}

// flush writes the queued replies unless another goroutine is doing so.
func (c *conn) flush() {
	c.out.Lock()
	if c.out.writing || len(c.out.queue) == 0 {
		c.out.Unlock()
		return
	}
	c.writeQueued()
}

// writeQueued writes batches of queued replies until the queue is empty.
// It is called with c.out locked, nobody writing and a reply queued, and
// returns with c.out unlocked.
func (c *conn) writeQueued() {
	c.out.writing = true
	for {
		batch := c.out.queue
		c.out.queue = c.out.spare[:0]
		c.out.Unlock()

		c.writeBatch(batch)
		clear(batch) // drop the finished jobs

		c.out.Lock()
		c.out.spare = batch[:0]
		if len(c.out.queue) == 0 {
			c.out.writing = false
			c.out.Unlock()
			return
		}
	}
}

// writeBatch writes the replies of batch with as few syscalls as the
// connection allows (one writev on TCP and Unix sockets, full records over
// TLS) and finishes the
// jobs. A failed write breaks the connection.
func (c *conn) writeBatch(batch []*job) {
	c.wmu.Lock()
	err := errBroken
	if !c.broken.Load() {
		iov := c.iov[:0]
		for _, j := range batch {
			iov = append(iov, j.vec[0])
			if len(j.vec[1]) > 0 {
				iov = append(iov, j.vec[1])
			}
		}
		c.wbufs = iov
		err = c.writeIOV()
		clear(iov) // hold no payload buffers
		if cap(iov) > cap(c.iov) {
			c.iov = iov[:0] // keep what a large batch grew
		}
	}
	c.wmu.Unlock()
	if err != nil {
		c.fail(err)
	}
	for _, j := range batch {
		c.finish(j)
	}
}

// writeIOV writes c.wbufs, consuming them. A panic of the connection's
// Write (a net.Conn not from package net) is logged and returned as an
// error, so that the queued replies are still finished.
func (c *conn) writeIOV() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = c.panicked(p)
		}
	}()
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.replyTimeout))
	if c.raw != nil {
		return c.raw.writeBuffers(&c.wbufs)
	}
	if bw, ok := c.nc.(buffersWriter); ok {
		return bw.writeBuffers(&c.wbufs)
	}
	_, err = c.wbufs.WriteTo(c.nc)
	return err
}

// buffersWriter is a connection that writes net.Buffers better than
// net.Buffers.WriteTo can, which uses writev only on package net's own
// connections (see upgradableConn).
type buffersWriter interface {
	writeBuffers(bufs *net.Buffers) error
}
