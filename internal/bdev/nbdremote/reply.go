package nbdremote

import (
	"encoding/binary"
	"fmt"
	"io"

	"blockcache/internal/nbdproto"
)

// replyReader parses the server's replies on one connection. It is used by
// that connection's reader goroutine only.
type replyReader struct {
	r          io.Reader
	structured bool
	// lookup returns the in-flight request a cookie names, or nil.
	lookup func(cookie uint64) *request
	hdr    [nbdproto.ChunkLen]byte
	msg    [maxErrorMessage + 8]byte
	tmp    [12]byte // chunk payload headers; a field so nothing escapes per reply
}

// next reads one simple reply or one structured chunk. It returns the
// request it belongs to and done when that request's reply is complete
// (its outcome is then in req.result). Any error means the stream can no
// longer be trusted and the connection must go.
func (rr *replyReader) next() (req *request, done bool, err error) {
	h := rr.hdr[:]
	if _, err := io.ReadFull(rr.r, h[:4]); err != nil {
		if err == io.ErrUnexpectedEOF {
			err = eofAsProtocol(err)
		}
		return nil, false, err
	}
	switch m := binary.BigEndian.Uint32(h); m {
	case nbdproto.MagicSimpleReply:
		if _, err := io.ReadFull(rr.r, h[4:nbdproto.SimpleReplyLen]); err != nil {
			return nil, false, eofAsProtocol(err)
		}
		sr, _ := nbdproto.ParseSimpleReply((*[nbdproto.SimpleReplyLen]byte)(h)) // magic checked above
		req = rr.lookup(sr.Cookie)
		if req == nil {
			return nil, false, fmt.Errorf("simple reply for cookie %#x, which is not in flight: %w", sr.Cookie, ErrProtocol)
		}
		if sr.Errno != 0 {
			req.result = &ServerError{Errno: nbdproto.SyscallErrno(sr.Errno)}
			return req, true, nil
		}
		if req.cmd == nbdproto.CmdRead {
			if _, err := io.ReadFull(rr.r, req.buf); err != nil {
				return nil, false, eofAsProtocol(err)
			}
		}
		return req, true, nil
	case nbdproto.MagicStructuredReply:
		if !rr.structured {
			return nil, false, fmt.Errorf("structured reply chunk without NBD_OPT_STRUCTURED_REPLY: %w", ErrProtocol)
		}
		if _, err := io.ReadFull(rr.r, h[4:nbdproto.ChunkLen]); err != nil {
			return nil, false, eofAsProtocol(err)
		}
		return rr.chunk()
	default:
		return nil, false, fmt.Errorf("reply magic %#x: %w", m, ErrProtocol)
	}
}

// chunk handles a structured chunk whose header is in rr.hdr.
func (rr *replyReader) chunk() (req *request, done bool, err error) {
	c, _ := nbdproto.ParseChunk(&rr.hdr) // magic checked by next
	typ, n := c.Type, c.Length
	req = rr.lookup(c.Cookie)
	if req == nil {
		return nil, false, fmt.Errorf("chunk type %d for cookie %#x, which is not in flight: %w", typ, c.Cookie, ErrProtocol)
	}
	done = c.Flags&nbdproto.ReplyFlagDone != 0
	switch typ {
	case nbdproto.ReplyTypeNone:
		if n != 0 || !done {
			return nil, false, fmt.Errorf("NBD_REPLY_TYPE_NONE with length %d, done %v: %w", n, done, ErrProtocol)
		}
	case nbdproto.ReplyTypeOffsetData:
		if req.cmd != nbdproto.CmdRead || n < 8 {
			return nil, false, fmt.Errorf("data chunk of %d bytes for a %s: %w", n, cmdName(req.cmd), ErrProtocol)
		}
		ob := rr.tmp[:8]
		if _, err := io.ReadFull(rr.r, ob); err != nil {
			return nil, false, eofAsProtocol(err)
		}
		dst, err := req.window(binary.BigEndian.Uint64(ob), uint64(n-8))
		if err != nil {
			return nil, false, err
		}
		if _, err := io.ReadFull(rr.r, dst); err != nil {
			return nil, false, eofAsProtocol(err)
		}
		req.covered += uint64(len(dst))
	case nbdproto.ReplyTypeOffsetHole:
		if req.cmd != nbdproto.CmdRead || n != 12 {
			return nil, false, fmt.Errorf("hole chunk of %d bytes for a %s: %w", n, cmdName(req.cmd), ErrProtocol)
		}
		b := rr.tmp[:12]
		if _, err := io.ReadFull(rr.r, b); err != nil {
			return nil, false, eofAsProtocol(err)
		}
		dst, err := req.window(binary.BigEndian.Uint64(b), uint64(binary.BigEndian.Uint32(b[8:])))
		if err != nil {
			return nil, false, err
		}
		clear(dst)
		req.covered += uint64(len(dst))
	case nbdproto.ReplyTypeError, nbdproto.ReplyTypeErrorOffset:
		if err := rr.errorChunk(req, typ, n); err != nil {
			return nil, false, err
		}
	default:
		if typ&nbdproto.ReplyTypeErrorBit == 0 {
			return nil, false, fmt.Errorf("unknown chunk type %d: %w", typ, ErrProtocol)
		}
		// An unknown error type: its payload starts with the error.
		if err := rr.errorChunk(req, nbdproto.ReplyTypeError, n); err != nil {
			return nil, false, err
		}
	}
	if done && req.result == nil && req.cmd == nbdproto.CmdRead && req.covered != uint64(len(req.buf)) && req.structuredRead {
		req.result = fmt.Errorf("read reply covered %d of %d bytes: %w", req.covered, len(req.buf), ErrProtocol)
	}
	return req, done, nil
}

// errorChunk reads an error chunk's payload of n bytes: error, message
// length, message, and for NBD_REPLY_TYPE_ERROR_OFFSET the offset. The
// first error of a request is kept.
func (rr *replyReader) errorChunk(req *request, typ nbdproto.ReplyType, n uint32) error {
	if n < 6 {
		return fmt.Errorf("error chunk of %d bytes: %w", n, ErrProtocol)
	}
	b := rr.tmp[:6]
	if _, err := io.ReadFull(rr.r, b); err != nil {
		return eofAsProtocol(err)
	}
	e := binary.BigEndian.Uint32(b)
	mlen := uint32(binary.BigEndian.Uint16(b[4:]))
	rest := n - 6
	want := mlen
	if typ == nbdproto.ReplyTypeErrorOffset {
		want += 8
	}
	if rest < want || mlen > maxErrorMessage || rest > maxErrorMessage+8 || (typ == nbdproto.ReplyTypeErrorOffset && rest != want) {
		return fmt.Errorf("error chunk of %d bytes with a %d-byte message: %w", n, mlen, ErrProtocol)
	}
	if _, err := io.ReadFull(rr.r, rr.msg[:rest]); err != nil {
		return eofAsProtocol(err)
	}
	buf := rr.msg[:mlen]
	if e == 0 {
		return fmt.Errorf("error chunk with error value 0: %w", ErrProtocol)
	}
	if req.result == nil {
		req.result = &ServerError{Errno: nbdproto.SyscallErrno(e), Message: sanitize(buf)}
	}
	return nil
}
