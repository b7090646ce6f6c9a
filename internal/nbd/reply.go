package nbd

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"time"
)

// maxErrorMessage bounds the human-readable message of an error chunk.
const maxErrorMessage = 1024

// reply answers an executed request. Without structured replies a READ gets
// a simple reply followed by its data; with them, a single OFFSET_DATA chunk
// flagged DONE (so NBD_CMD_FLAG_DF always holds). Other successful requests
// get a simple reply, which the spec allows in either mode.
func (c *conn) reply(j *job, err error) error {
	if err != nil {
		return c.replyError(j.req, err)
	}
	if j.req.typ != cmdRead {
		putSimpleReply(j.hdr[:simpleReplyLen], 0, j.req.handle)
		return c.write(j.hdr[:simpleReplyLen])
	}
	data := *j.buf
	var h []byte
	if c.structured {
		putStructuredReply(j.hdr[:], replyFlagDone, replyTypeOffsetData, j.req.handle, uint32(8+len(data)))
		binary.BigEndian.PutUint64(j.hdr[structuredReplyLen:], j.req.offset)
		h = j.hdr[:structuredReplyLen+8]
	} else {
		putSimpleReply(j.hdr[:simpleReplyLen], 0, j.req.handle)
		h = j.hdr[:simpleReplyLen]
	}
	j.vec = [2][]byte{h, data}
	j.bufs = j.vec[:]
	return c.writeVec(&j.bufs)
}

// replyError answers a request with errnoFor(err): a simple reply, or with
// structured replies an NBD_REPLY_TYPE_ERROR chunk carrying err's text,
// which the spec prefers and requires for READ.
func (c *conn) replyError(r requestHeader, err error) error {
	errno := errnoFor(err)
	if !c.structured {
		var b [simpleReplyLen]byte
		putSimpleReply(b[:], errno, r.handle)
		return c.write(b[:])
	}
	msg := err.Error()
	if len(msg) > maxErrorMessage {
		msg = strings.ToValidUTF8(msg[:maxErrorMessage], "")
	}
	b := make([]byte, structuredReplyLen+6+len(msg))
	putStructuredReply(b, replyFlagDone, replyTypeError, r.handle, uint32(6+len(msg)))
	binary.BigEndian.PutUint32(b[structuredReplyLen:], errno)
	binary.BigEndian.PutUint16(b[structuredReplyLen+4:], uint16(len(msg)))
	copy(b[structuredReplyLen+6:], msg)
	return c.write(b)
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

// writeVec sends a reply made of several buffers (header and data) with one
// writev where the connection supports it. It consumes *v.
func (c *conn) writeVec(v *net.Buffers) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.broken.Load() {
		return errBroken
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.replyTimeout))
	_, err := v.WriteTo(c.nc)
	return err
}
