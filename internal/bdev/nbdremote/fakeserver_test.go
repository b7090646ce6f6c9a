package nbdremote

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"blockcache/internal/nbdproto"
)

// fakeServer is an in-process NBD server whose behaviour tests control:
// it can hold requests unanswered, drop connections with requests held,
// answer with errors, refuse an export, or never answer. It records the
// order in which it executed writes and flushes.
type fakeServer struct {
	t    *testing.T
	ln   net.Listener
	addr string

	export     string
	flags      nbdproto.TxFlags
	structured bool
	noGo       bool      // refuse NBD_OPT_GO as unknown: the client falls back to NBD_OPT_EXPORT_NAME
	blockSize  [3]uint32 // min, preferred, max; zero: no NBD_INFO_BLOCK_SIZE
	// volatile models a write cache: writes without FUA reach durable
	// only at the next flush, and crash drops the rest.
	volatile bool

	mu struct {
		sync.Mutex
		data     []byte
		durable  []byte // with volatile: what survives a crash
		hold     bool   // keep requests unanswered
		held     []fakeReq
		silent   bool     // read requests, never answer
		refuse   bool     // close new connections at once
		errAt    int64    // offset whose reads fail with EIO; -1 none
		log      []string // executed commands, "write@off" / "flush"
		conns    []net.Conn
		accepted int
		ended    []error // why each connection's request loop ended
		changed  chan struct{}
	}
}

// errDisc ends a connection's request loop at NBD_CMD_DISC.
var errDisc = errors.New("NBD_CMD_DISC")

type fakeReq struct {
	c       net.Conn
	wmu     *sync.Mutex
	flags   nbdproto.CmdFlags
	typ     nbdproto.Command
	cookie  uint64
	off     uint64
	length  uint32
	payload []byte
}

func newFakeServer(t *testing.T, size int) *fakeServer {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "nbd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	return newFakeServerOn(t, ln, size)
}

// newFakeServerTCP is newFakeServer on TCP loopback.
func newFakeServerTCP(t *testing.T, size int) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newFakeServerOn(t, ln, size)
}

func newFakeServerOn(t *testing.T, ln net.Listener, size int) *fakeServer {
	s := &fakeServer{t: t, ln: ln, addr: ln.Addr().String(), export: "disk", structured: true,
		flags: nbdproto.TxHasFlags | nbdproto.TxSendFlush | nbdproto.TxSendFUA | nbdproto.TxSendTrim | nbdproto.TxSendWriteZeroes | nbdproto.TxCanMultiConn}
	s.mu.data = make([]byte, size)
	s.mu.durable = make([]byte, size)
	s.mu.errAt = -1
	s.mu.changed = make(chan struct{})
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) uri() URI {
	return URI{Network: s.ln.Addr().Network(), Address: s.addr, Export: s.export}
}

func (s *fakeServer) close() {
	s.ln.Close()
	s.dropAll(false)
}

// notifyLocked wakes waitFor callers.
func (s *fakeServer) notifyLocked() {
	close(s.mu.changed)
	s.mu.changed = make(chan struct{})
}

// waitFor blocks until cond holds, checked under the lock.
func (s *fakeServer) waitFor(cond func() bool) {
	for {
		s.mu.Lock()
		ok, ch := cond(), s.mu.changed
		s.mu.Unlock()
		if ok {
			return
		}
		<-ch
	}
}

// dropAll closes every connection; with execute, the held requests are
// executed first (without replies), else dropped.
func (s *fakeServer) dropAll(execute bool) {
	s.mu.Lock()
	if execute {
		for _, r := range s.mu.held {
			s.executeLocked(r)
		}
	}
	s.mu.held = nil
	for _, c := range s.mu.conns {
		c.Close()
	}
	s.mu.conns = nil
	s.notifyLocked()
	s.mu.Unlock()
}

func (s *fakeServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.mu.refuse {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.mu.conns = append(s.mu.conns, c)
		s.mu.accepted++
		s.notifyLocked()
		s.mu.Unlock()
		go s.handle(c)
	}
}

// greetClient sends a fixed-newstyle server greeting (no zeroes) on c and
// reads the client's flags.
func greetClient(c net.Conn) (cflags [4]byte, err error) {
	var greet [18]byte
	binary.BigEndian.PutUint64(greet[0:], nbdproto.MagicNBD)
	binary.BigEndian.PutUint64(greet[8:], nbdproto.MagicOption)
	binary.BigEndian.PutUint16(greet[16:], nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes)
	if _, err := c.Write(greet[:]); err != nil {
		return cflags, err
	}
	_, err = io.ReadFull(c, cflags[:])
	return cflags, err
}

func (s *fakeServer) handle(c net.Conn) {
	defer c.Close()
	if _, err := greetClient(c); err != nil {
		return
	}
	structured := false
	for {
		var h [16]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		opt := nbdproto.Option(binary.BigEndian.Uint32(h[8:]))
		data := make([]byte, binary.BigEndian.Uint32(h[12:]))
		if _, err := io.ReadFull(c, data); err != nil {
			return
		}
		switch opt {
		case nbdproto.OptStructuredReply:
			if s.structured {
				structured = true
				optReply(c, opt, nbdproto.RepAck, nil)
			} else {
				optReply(c, opt, nbdproto.RepErrUnsup, nil)
			}
			continue
		case nbdproto.OptExportName:
			if string(data) != s.export {
				return // NBD_OPT_EXPORT_NAME refuses by hanging up
			}
			s.mu.Lock()
			size := uint64(len(s.mu.data))
			s.mu.Unlock()
			b := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint64(nil, size), uint16(s.flags))
			c.Write(b) // NO_ZEROES was offered and taken
		case nbdproto.OptGo:
			if s.noGo {
				optReply(c, opt, nbdproto.RepErrUnsup, nil)
				continue
			}
			name := string(data[4 : 4+binary.BigEndian.Uint32(data)])
			if name != s.export {
				optReply(c, opt, nbdproto.RepErrUnknown, []byte("no export "+name))
				continue
			}
			s.mu.Lock()
			size := uint64(len(s.mu.data))
			s.mu.Unlock()
			info := make([]byte, 12)
			binary.BigEndian.PutUint16(info, uint16(nbdproto.InfoExport))
			binary.BigEndian.PutUint64(info[2:], size)
			binary.BigEndian.PutUint16(info[10:], uint16(s.flags))
			optReply(c, opt, nbdproto.RepInfo, info)
			if s.blockSize[0] != 0 {
				bs := make([]byte, 14)
				binary.BigEndian.PutUint16(bs, uint16(nbdproto.InfoBlockSize))
				binary.BigEndian.PutUint32(bs[2:], s.blockSize[0])
				binary.BigEndian.PutUint32(bs[6:], s.blockSize[1])
				binary.BigEndian.PutUint32(bs[10:], s.blockSize[2])
				optReply(c, opt, nbdproto.RepInfo, bs)
			}
			optReply(c, opt, nbdproto.RepAck, nil)
		default:
			optReply(c, opt, nbdproto.RepErrUnsup, nil)
			continue
		}
		break
	}
	s.transmit(c, structured)
}

func optReply(c net.Conn, opt nbdproto.Option, typ nbdproto.RepType, data []byte) {
	b := make([]byte, 20+len(data))
	binary.BigEndian.PutUint64(b, nbdproto.MagicOptionReply)
	binary.BigEndian.PutUint32(b[8:], uint32(opt))
	binary.BigEndian.PutUint32(b[12:], uint32(typ))
	binary.BigEndian.PutUint32(b[16:], uint32(len(data)))
	copy(b[20:], data)
	c.Write(b)
}

func (s *fakeServer) transmit(c net.Conn, structured bool) {
	wmu := &sync.Mutex{}
	for {
		var h [28]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			s.mu.Lock()
			s.mu.ended = append(s.mu.ended, err)
			s.notifyLocked()
			s.mu.Unlock()
			return
		}
		r := fakeReq{c: c, wmu: wmu, flags: nbdproto.CmdFlags(binary.BigEndian.Uint16(h[4:])), typ: nbdproto.Command(binary.BigEndian.Uint16(h[6:])),
			cookie: binary.BigEndian.Uint64(h[8:]), off: binary.BigEndian.Uint64(h[16:]), length: binary.BigEndian.Uint32(h[24:])}
		if r.typ == nbdproto.CmdDisc {
			s.mu.Lock()
			s.mu.ended = append(s.mu.ended, errDisc)
			s.notifyLocked()
			s.mu.Unlock()
			return
		}
		if r.typ == nbdproto.CmdWrite {
			r.payload = make([]byte, r.length)
			if _, err := io.ReadFull(c, r.payload); err != nil {
				return
			}
		}
		s.mu.Lock()
		switch {
		case s.mu.silent:
		case s.mu.hold:
			s.mu.held = append(s.mu.held, r)
		default:
			out := s.executeLocked(r)
			s.mu.Unlock()
			s.reply(r, structured, out)
			s.mu.Lock()
		}
		s.notifyLocked()
		s.mu.Unlock()
	}
}

// executeLocked applies r and returns what to reply: read data, or an
// error when the read hits errAt.
func (s *fakeServer) executeLocked(r fakeReq) (out fakeOut) {
	switch r.typ {
	case nbdproto.CmdRead:
		if s.mu.errAt >= 0 && int64(r.off) <= s.mu.errAt && s.mu.errAt < int64(r.off)+int64(r.length) {
			return fakeOut{errno: 5, msg: "injected"}
		}
		out.data = append([]byte(nil), s.mu.data[r.off:r.off+uint64(r.length)]...)
	case nbdproto.CmdWrite:
		copy(s.mu.data[r.off:], r.payload)
		s.mu.log = append(s.mu.log, "write@"+itoa(r.off)+"="+itoa(uint64(r.payload[0])))
	case nbdproto.CmdWriteZeroes, nbdproto.CmdTrim:
		clear(s.mu.data[r.off : r.off+uint64(r.length)])
	case nbdproto.CmdFlush:
		copy(s.mu.durable, s.mu.data)
		s.mu.log = append(s.mu.log, "flush")
	}
	if !s.volatile || r.flags&nbdproto.CmdFlagFUA != 0 {
		end := r.off + uint64(r.length)
		if r.typ == nbdproto.CmdRead {
			end = r.off
		}
		copy(s.mu.durable[r.off:end], s.mu.data[r.off:end])
	}
	return out
}

// crash drops every connection and, with volatile, the writes no flush
// made durable, as a server killed and started again.
func (s *fakeServer) crash() {
	s.mu.Lock()
	if s.volatile {
		copy(s.mu.data, s.mu.durable)
	}
	s.mu.Unlock()
	s.dropAll(false)
}

// durableContents returns a copy of what would survive a crash.
func (s *fakeServer) durableContents() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.mu.durable...)
}

type fakeOut struct {
	data  []byte
	errno uint32
	msg   string
}

func itoa(v uint64) string {
	if v == 0 {
		return "0"
	}
	var b []byte
	for ; v > 0; v /= 10 {
		b = append([]byte{byte('0' + v%10)}, b...)
	}
	return string(b)
}

// reply answers r: simple replies, or for reads on a structured connection
// the data in two chunks, second half first, then a NONE chunk with DONE;
// errors as an error chunk with a message.
func (s *fakeServer) reply(r fakeReq, structured bool, out fakeOut) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if !structured || r.typ != nbdproto.CmdRead {
		var h [16]byte
		binary.BigEndian.PutUint32(h[0:], nbdproto.MagicSimpleReply)
		binary.BigEndian.PutUint32(h[4:], out.errno)
		binary.BigEndian.PutUint64(h[8:], r.cookie)
		r.c.Write(h[:])
		if r.typ == nbdproto.CmdRead && out.errno == 0 {
			r.c.Write(out.data)
		}
		return
	}
	chunk := func(flags uint16, typ nbdproto.ReplyType, payload []byte) {
		h := make([]byte, 20+len(payload))
		binary.BigEndian.PutUint32(h[0:], nbdproto.MagicStructuredReply)
		binary.BigEndian.PutUint16(h[4:], flags)
		binary.BigEndian.PutUint16(h[6:], uint16(typ))
		binary.BigEndian.PutUint64(h[8:], r.cookie)
		binary.BigEndian.PutUint32(h[16:], uint32(len(payload)))
		copy(h[20:], payload)
		r.c.Write(h)
	}
	if out.errno != 0 {
		p := make([]byte, 6+len(out.msg))
		binary.BigEndian.PutUint32(p, out.errno)
		binary.BigEndian.PutUint16(p[4:], uint16(len(out.msg)))
		copy(p[6:], out.msg)
		chunk(nbdproto.ReplyFlagDone, nbdproto.ReplyTypeError, p)
		return
	}
	half := uint64(len(out.data) / 2)
	for _, part := range [][2]uint64{{half, uint64(len(out.data))}, {0, half}} {
		if part[0] == part[1] {
			continue
		}
		p := make([]byte, 8+part[1]-part[0])
		binary.BigEndian.PutUint64(p, r.off+part[0])
		copy(p[8:], out.data[part[0]:part[1]])
		chunk(0, nbdproto.ReplyTypeOffsetData, p)
	}
	chunk(nbdproto.ReplyFlagDone, nbdproto.ReplyTypeNone, nil)
}

// contents returns a copy of the server's data.
func (s *fakeServer) contents() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.mu.data...)
}

func (s *fakeServer) setHold(v bool) {
	s.mu.Lock()
	s.mu.hold = v
	s.mu.Unlock()
}

func (s *fakeServer) setRefuse(v bool) {
	s.mu.Lock()
	s.mu.refuse = v
	s.mu.Unlock()
}

func (s *fakeServer) log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.mu.log...)
}
