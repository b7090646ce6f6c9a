package nbdclient

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// ErrClosed is returned for requests on a client whose connection ended.
var ErrClosed = errors.New("nbd: connection closed")

// Client is a connection in the transmission phase. Its methods are safe
// for concurrent use; requests run concurrently and replies are matched by
// handle in whatever order the server sends them.
type Client struct {
	Export     ExportInfo
	Structured bool

	nc   net.Conn
	br   *bufio.Reader
	wmu  sync.Mutex    // held while writing one request
	done chan struct{} // closed when the reply reader stops

	mu struct {
		sync.Mutex
		pending map[uint64]*call
		next    uint64
		err     error // why the reader stopped; set before done is closed
		order   []uint64
	}
}

// Request is one request. Length is sent as is; Payload follows the header
// (for WRITE), and tests may make the two disagree.
type Request struct {
	Type, Flags uint16
	Offset      uint64
	Length      uint32
	Payload     []byte
}

// Reply is the answer to one request.
type Reply struct {
	Handle uint64
	Err    error  // nil or *Error
	Data   []byte // READ data
	Chunks int    // structured reply chunks received; 0 for a simple reply
}

type call struct {
	req     Request
	reply   Reply
	covered uint64 // READ bytes received in structured chunks
	done    chan struct{}
}

func (n *Negotiator) start(info ExportInfo) *Client {
	c := &Client{Export: info, Structured: n.structured, nc: n.nc, br: n.br, done: make(chan struct{})}
	c.mu.pending = make(map[uint64]*call)
	go c.readReplies()
	return c
}

// Conn returns the underlying connection, for tests that misbehave on it.
func (c *Client) Conn() net.Conn { return c.nc }

// Done is closed when the connection has ended (the server closed it, a
// protocol error, or Close).
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, once Done is closed.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.err
}

// ReplyOrder returns the handles of completed requests in the order their
// replies arrived.
func (c *Client) ReplyOrder() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint64(nil), c.mu.order...)
}

// Close closes the connection without NBD_CMD_DISC and waits for the reply
// reader to stop.
func (c *Client) Close() error {
	err := c.nc.Close()
	<-c.done
	return err
}

// Disconnect sends NBD_CMD_DISC and waits for the server to close the
// connection, which it does after answering every request in flight.
func (c *Client) Disconnect() error {
	if err := c.send(0, Request{Type: CmdDisc}); err != nil {
		return err
	}
	<-c.done
	c.nc.Close()
	if err := c.Err(); !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Do sends a request and waits for its reply. The error is non-nil only if
// the connection failed; the server's verdict is Reply.Err.
func (c *Client) Do(r Request) (Reply, error) {
	cl := &call{req: r, done: make(chan struct{})}
	c.mu.Lock()
	if c.mu.err != nil {
		err := c.mu.err
		c.mu.Unlock()
		return Reply{}, fmt.Errorf("%w: %w", ErrClosed, err)
	}
	c.mu.next++
	h := c.mu.next
	cl.reply.Handle = h
	c.mu.pending[h] = cl
	c.mu.Unlock()
	if err := c.send(h, r); err != nil {
		return Reply{}, err
	}
	select {
	case <-cl.done:
		return cl.reply, nil
	case <-c.done:
		select {
		case <-cl.done:
			return cl.reply, nil
		default:
		}
		return Reply{}, fmt.Errorf("%w before reply to handle %d: %w", ErrClosed, h, c.Err())
	}
}

// SendRaw writes b to the connection as is.
func (c *Client) SendRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

func (c *Client) send(handle uint64, r Request) error {
	hdr := make([]byte, 28)
	binary.BigEndian.PutUint32(hdr[0:4], magicRequest)
	binary.BigEndian.PutUint16(hdr[4:6], r.Flags)
	binary.BigEndian.PutUint16(hdr[6:8], r.Type)
	binary.BigEndian.PutUint64(hdr[8:16], handle)
	binary.BigEndian.PutUint64(hdr[16:24], r.Offset)
	binary.BigEndian.PutUint32(hdr[24:28], r.Length)
	bufs := net.Buffers{hdr, r.Payload}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := bufs.WriteTo(c.nc)
	return err
}

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(p []byte, off uint64) error {
	r, err := c.Do(Request{Type: CmdRead, Offset: off, Length: uint32(len(p))})
	if err != nil {
		return err
	}
	if r.Err != nil {
		return r.Err
	}
	copy(p, r.Data)
	return nil
}

// WriteAt writes p at off with the given command flags (e.g. CmdFlagFUA).
func (c *Client) WriteAt(p []byte, off uint64, flags uint16) error {
	return c.simple(Request{Type: CmdWrite, Flags: flags, Offset: off, Length: uint32(len(p)), Payload: p})
}

// Flush sends NBD_CMD_FLUSH.
func (c *Client) Flush() error { return c.simple(Request{Type: CmdFlush}) }

// Trim sends NBD_CMD_TRIM.
func (c *Client) Trim(off uint64, n uint32, flags uint16) error {
	return c.simple(Request{Type: CmdTrim, Flags: flags, Offset: off, Length: n})
}

// WriteZeroes sends NBD_CMD_WRITE_ZEROES.
func (c *Client) WriteZeroes(off uint64, n uint32, flags uint16) error {
	return c.simple(Request{Type: CmdWriteZeroes, Flags: flags, Offset: off, Length: n})
}

func (c *Client) simple(r Request) error {
	rep, err := c.Do(r)
	if err != nil {
		return err
	}
	return rep.Err
}

// readReplies runs until the connection ends, completing calls.
func (c *Client) readReplies() {
	err := c.readLoop()
	c.mu.Lock()
	c.mu.err = err
	c.mu.Unlock()
	close(c.done)
}

func (c *Client) readLoop() error {
	var b [20]byte
	for {
		if _, err := io.ReadFull(c.br, b[:4]); err != nil {
			return err
		}
		switch m := binary.BigEndian.Uint32(b[:4]); m {
		case magicSimple:
			if err := c.readSimple(b[:16]); err != nil {
				return err
			}
		case magicStructured:
			if !c.Structured {
				return errors.New("nbd: structured reply without negotiation")
			}
			if err := c.readChunk(b[:20]); err != nil {
				return err
			}
		default:
			return fmt.Errorf("nbd: bad reply magic %#x", m)
		}
	}
}

func (c *Client) take(h uint64, remove bool) (*call, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.mu.pending[h]
	if !ok {
		return nil, fmt.Errorf("nbd: reply for unknown handle %d", h)
	}
	if remove {
		delete(c.mu.pending, h)
		c.mu.order = append(c.mu.order, h)
	}
	return cl, nil
}

func (c *Client) readSimple(b []byte) error {
	if _, err := io.ReadFull(c.br, b[4:16]); err != nil {
		return err
	}
	errno, h := binary.BigEndian.Uint32(b[4:8]), binary.BigEndian.Uint64(b[8:16])
	cl, err := c.take(h, true)
	if err != nil {
		return err
	}
	if errno != 0 {
		cl.reply.Err = &Error{Errno: errno}
	} else if cl.req.Type == CmdRead {
		if c.Structured {
			return errors.New("nbd: simple reply to READ after structured replies were negotiated")
		}
		cl.reply.Data = make([]byte, cl.req.Length)
		if _, err := io.ReadFull(c.br, cl.reply.Data); err != nil {
			return err
		}
	}
	close(cl.done)
	return nil
}

func (c *Client) readChunk(b []byte) error {
	if _, err := io.ReadFull(c.br, b[4:20]); err != nil {
		return err
	}
	flags, typ := binary.BigEndian.Uint16(b[4:6]), binary.BigEndian.Uint16(b[6:8])
	h, length := binary.BigEndian.Uint64(b[8:16]), binary.BigEndian.Uint32(b[16:20])
	if length > maxChunk {
		return fmt.Errorf("nbd: chunk of %d bytes", length)
	}
	p := make([]byte, length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return err
	}
	last := flags&replyFlagDone != 0
	cl, err := c.take(h, last)
	if err != nil {
		return err
	}
	cl.reply.Chunks++
	req := cl.req
	switch typ {
	case replyTypeNone:
		if length != 0 || !last {
			return errors.New("nbd: malformed NBD_REPLY_TYPE_NONE")
		}
	case replyTypeOffsetData, replyTypeOffsetHole:
		if req.Type != CmdRead || length < 12 && typ == replyTypeOffsetHole || length < 9 {
			return fmt.Errorf("nbd: malformed content chunk type %d for command %d", typ, req.Type)
		}
		off := binary.BigEndian.Uint64(p[0:8])
		n := uint64(length - 8)
		if typ == replyTypeOffsetHole {
			n = uint64(binary.BigEndian.Uint32(p[8:12]))
		}
		if off < req.Offset || off+n > req.Offset+uint64(req.Length) {
			return fmt.Errorf("nbd: chunk [%d,+%d) outside request [%d,+%d)", off, n, req.Offset, req.Length)
		}
		if cl.reply.Data == nil {
			cl.reply.Data = make([]byte, req.Length)
		}
		if typ == replyTypeOffsetData {
			copy(cl.reply.Data[off-req.Offset:], p[8:])
		}
		cl.covered += n
	case replyTypeError, replyTypeErrorOffset:
		if length < 6 {
			return errors.New("nbd: short error chunk")
		}
		errno, ml := binary.BigEndian.Uint32(p[0:4]), int(binary.BigEndian.Uint16(p[4:6]))
		if errno == 0 || ml > len(p)-6 {
			return errors.New("nbd: malformed error chunk")
		}
		cl.reply.Err = &Error{Errno: errno, Message: string(p[6 : 6+ml])}
	default:
		return fmt.Errorf("nbd: unknown chunk type %#x", typ)
	}
	if last {
		if req.Type == CmdRead && cl.reply.Err == nil && cl.covered != uint64(req.Length) {
			return fmt.Errorf("nbd: read reply covers %d of %d bytes", cl.covered, req.Length)
		}
		close(cl.done)
	}
	return nil
}
