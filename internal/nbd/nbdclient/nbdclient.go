// Package nbdclient is a small NBD client for tests: fixed newstyle
// negotiation with raw access to every option, optional structured replies,
// and requests issued concurrently and matched to replies by handle.
//
// It is a deliberate second encoding of the protocol: it defines its
// constants and header layouts itself rather than importing package
// nbdproto, which the server and the NBD client bdev share, so that tests
// cross-check package nbd instead of sharing its mistakes. Keep it apart.
// It trusts nothing the server sends: an inconsistent reply ends the
// connection with an error.
package nbdclient

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// Protocol constants (doc/proto.md of github.com/NetworkBlockDevice/nbd).
const (
	magicNBD         = 0x4e42444d41474943 // "NBDMAGIC"
	magicOption      = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply    = 0x0003e889045565a9
	magicRequest     = 0x25609513
	magicSimple      = 0x67446698
	magicStructured  = 0x668e33ef
	exportNameZeroes = 124
)

// Handshake flags sent by the server, and client flags.
const (
	FlagFixedNewstyle   uint16 = 1 << 0
	FlagNoZeroes        uint16 = 1 << 1
	ClientFixedNewstyle uint32 = 1 << 0
	ClientNoZeroes      uint32 = 1 << 1
)

// Transmission flags.
const (
	FlagHasFlags        uint16 = 1 << 0
	FlagReadOnly        uint16 = 1 << 1
	FlagSendFlush       uint16 = 1 << 2
	FlagSendFUA         uint16 = 1 << 3
	FlagRotational      uint16 = 1 << 4
	FlagSendTrim        uint16 = 1 << 5
	FlagSendWriteZeroes uint16 = 1 << 6
	FlagSendDF          uint16 = 1 << 7
	FlagCanMultiConn    uint16 = 1 << 8
)

// Options.
const (
	OptExportName      uint32 = 1
	OptAbort           uint32 = 2
	OptList            uint32 = 3
	OptStartTLS        uint32 = 5
	OptInfo            uint32 = 6
	OptGo              uint32 = 7
	OptStructuredReply uint32 = 8
	OptListMetaContext uint32 = 9
	OptSetMetaContext  uint32 = 10
)

// Option reply types.
const (
	RepAck         uint32 = 1
	RepServer      uint32 = 2
	RepInfo        uint32 = 3
	RepFlagError   uint32 = 1 << 31
	RepErrUnsup    uint32 = RepFlagError | 1
	RepErrPolicy   uint32 = RepFlagError | 2
	RepErrInvalid  uint32 = RepFlagError | 3
	RepErrUnknown  uint32 = RepFlagError | 6
	RepErrShutdown uint32 = RepFlagError | 7
	RepErrTooBig   uint32 = RepFlagError | 9
)

// Information types of NBD_REP_INFO.
const (
	InfoExport      uint16 = 0
	InfoName        uint16 = 1
	InfoDescription uint16 = 2
	InfoBlockSize   uint16 = 3
)

// Commands and command flags.
const (
	CmdRead        uint16 = 0
	CmdWrite       uint16 = 1
	CmdDisc        uint16 = 2
	CmdFlush       uint16 = 3
	CmdTrim        uint16 = 4
	CmdCache       uint16 = 5
	CmdWriteZeroes uint16 = 6
	CmdBlockStatus uint16 = 7

	CmdFlagFUA    uint16 = 1 << 0
	CmdFlagNoHole uint16 = 1 << 1
	CmdFlagDF     uint16 = 1 << 2
)

// Structured reply chunk types and flags.
const (
	replyFlagDone        = 1 << 0
	replyTypeNone        = 0
	replyTypeOffsetData  = 1
	replyTypeOffsetHole  = 2
	replyTypeError       = 1<<15 | 1
	replyTypeErrorOffset = 1<<15 | 2
)

// maxChunk bounds a structured chunk the client accepts.
const maxChunk = 64 << 20

// Error is an error the server sent in a reply. errors.Is matches it
// against the syscall.Errno of the same value (NBD error values are Linux
// errnos), e.g. errors.Is(err, syscall.EINVAL).
type Error struct {
	Errno   uint32
	Message string // from a structured error chunk; empty for simple replies
}

func (e *Error) Error() string {
	s := fmt.Sprintf("nbd: server error %d (%v)", e.Errno, syscall.Errno(e.Errno))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is reports whether target is the syscall.Errno e carries.
func (e *Error) Is(target error) bool {
	t, ok := target.(syscall.Errno)
	return ok && uint32(t) == e.Errno
}

// OptError is an error reply to an option.
type OptError struct {
	Option, Type uint32
	Message      string
}

func (e *OptError) Error() string {
	return fmt.Sprintf("nbd: option %d refused with reply type %#x: %s", e.Option, e.Type, e.Message)
}

// ExportInfo is what the server told about an export.
type ExportInfo struct {
	Name, Description             string
	Size                          uint64
	Flags                         uint16   // transmission flags
	MinBlock, PrefBlock, MaxBlock uint32   // zero if not sent
	InfoTypes                     []uint16 // NBD_REP_INFO types received, in order
}

// Negotiator is a connection in the handshake phase.
type Negotiator struct {
	nc             net.Conn
	br             *bufio.Reader
	HandshakeFlags uint16 // as sent by the server
	noZeroes       bool
	structured     bool
}

// Handshake reads the server's greeting on nc and answers with clientFlags
// (normally ClientFixedNewstyle|ClientNoZeroes).
func Handshake(nc net.Conn, clientFlags uint32) (*Negotiator, error) {
	n := &Negotiator{nc: nc, br: bufio.NewReader(nc)}
	var b [18]byte
	if _, err := io.ReadFull(n.br, b[:]); err != nil {
		return nil, fmt.Errorf("nbd: read greeting: %w", err)
	}
	if binary.BigEndian.Uint64(b[0:8]) != magicNBD || binary.BigEndian.Uint64(b[8:16]) != magicOption {
		return nil, fmt.Errorf("nbd: not a fixed newstyle server: greeting %x", b[:16])
	}
	n.HandshakeFlags = binary.BigEndian.Uint16(b[16:18])
	n.noZeroes = clientFlags&ClientNoZeroes != 0
	if err := binary.Write(nc, binary.BigEndian, clientFlags); err != nil {
		return nil, err
	}
	return n, nil
}

// Conn returns the underlying connection.
func (n *Negotiator) Conn() net.Conn { return n.nc }

// Close closes the connection.
func (n *Negotiator) Close() error { return n.nc.Close() }

// SendOption writes one option.
func (n *Negotiator) SendOption(opt uint32, data []byte) error {
	b := make([]byte, 16, 16+len(data))
	binary.BigEndian.PutUint64(b[0:8], magicOption)
	binary.BigEndian.PutUint32(b[8:12], opt)
	binary.BigEndian.PutUint32(b[12:16], uint32(len(data)))
	_, err := n.nc.Write(append(b, data...))
	return err
}

// OptReply is one reply to an option.
type OptReply struct {
	Option, Type uint32
	Data         []byte
}

// ReadReply reads one option reply.
func (n *Negotiator) ReadReply() (OptReply, error) {
	var b [20]byte
	if _, err := io.ReadFull(n.br, b[:]); err != nil {
		return OptReply{}, err
	}
	if m := binary.BigEndian.Uint64(b[0:8]); m != magicOptReply {
		return OptReply{}, fmt.Errorf("nbd: bad option reply magic %#x", m)
	}
	r := OptReply{Option: binary.BigEndian.Uint32(b[8:12]), Type: binary.BigEndian.Uint32(b[12:16])}
	length := binary.BigEndian.Uint32(b[16:20])
	if length > 1<<20 {
		return OptReply{}, fmt.Errorf("nbd: option reply of %d bytes", length)
	}
	r.Data = make([]byte, length)
	_, err := io.ReadFull(n.br, r.Data)
	return r, err
}

// Option sends opt and reads its replies up to the final one (NBD_REP_ACK
// or an error). An error reply is returned as *OptError, after the replies
// before it.
func (n *Negotiator) Option(opt uint32, data []byte) ([]OptReply, error) {
	if err := n.SendOption(opt, data); err != nil {
		return nil, err
	}
	var out []OptReply
	for {
		r, err := n.ReadReply()
		if err != nil {
			return out, err
		}
		if r.Option != opt {
			return out, fmt.Errorf("nbd: reply for option %d while waiting for %d", r.Option, opt)
		}
		switch {
		case r.Type&RepFlagError != 0:
			return out, &OptError{Option: opt, Type: r.Type, Message: string(r.Data)}
		case r.Type == RepAck:
			return out, nil
		}
		out = append(out, r)
	}
}

// StructuredReplies negotiates NBD_OPT_STRUCTURED_REPLY.
func (n *Negotiator) StructuredReplies() error {
	if _, err := n.Option(OptStructuredReply, nil); err != nil {
		return err
	}
	n.structured = true
	return nil
}

// ListEntry is one export of NBD_OPT_LIST.
type ListEntry struct{ Name, Description string }

// List asks for the exports.
func (n *Negotiator) List() ([]ListEntry, error) {
	rs, err := n.Option(OptList, nil)
	if err != nil {
		return nil, err
	}
	var out []ListEntry
	for _, r := range rs {
		if r.Type != RepServer || len(r.Data) < 4 {
			return nil, fmt.Errorf("nbd: unexpected reply %#x to NBD_OPT_LIST", r.Type)
		}
		l := binary.BigEndian.Uint32(r.Data[0:4])
		if uint64(l) > uint64(len(r.Data)-4) {
			return nil, errors.New("nbd: NBD_REP_SERVER name overruns reply")
		}
		out = append(out, ListEntry{Name: string(r.Data[4 : 4+l]), Description: string(r.Data[4+l:])})
	}
	return out, nil
}

// InfoData encodes the data of NBD_OPT_INFO / NBD_OPT_GO.
func InfoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, t := range infos {
		b = binary.BigEndian.AppendUint16(b, t)
	}
	return b
}

var allInfos = []uint16{InfoName, InfoDescription, InfoBlockSize}

// Info asks NBD_OPT_INFO about an export, requesting its name, description
// and block sizes.
func (n *Negotiator) Info(name string) (ExportInfo, error) {
	return n.info(OptInfo, name)
}

// Go ends negotiation with NBD_OPT_GO and returns the client for the
// transmission phase.
func (n *Negotiator) Go(name string) (*Client, error) {
	info, err := n.info(OptGo, name)
	if err != nil {
		return nil, err
	}
	return n.start(info), nil
}

func (n *Negotiator) info(opt uint32, name string) (ExportInfo, error) {
	rs, err := n.Option(opt, InfoData(name, allInfos...))
	if err != nil {
		return ExportInfo{}, err
	}
	var info ExportInfo
	gotExport := false
	for _, r := range rs {
		if r.Type != RepInfo || len(r.Data) < 2 {
			return info, fmt.Errorf("nbd: unexpected reply %#x to option %d", r.Type, opt)
		}
		t, d := binary.BigEndian.Uint16(r.Data[0:2]), r.Data[2:]
		info.InfoTypes = append(info.InfoTypes, t)
		switch t {
		case InfoExport:
			if len(d) != 10 {
				return info, fmt.Errorf("nbd: NBD_INFO_EXPORT of %d bytes", len(d))
			}
			info.Size, info.Flags = binary.BigEndian.Uint64(d[0:8]), binary.BigEndian.Uint16(d[8:10])
			gotExport = true
		case InfoName:
			info.Name = string(d)
		case InfoDescription:
			info.Description = string(d)
		case InfoBlockSize:
			if len(d) != 12 {
				return info, fmt.Errorf("nbd: NBD_INFO_BLOCK_SIZE of %d bytes", len(d))
			}
			info.MinBlock = binary.BigEndian.Uint32(d[0:4])
			info.PrefBlock = binary.BigEndian.Uint32(d[4:8])
			info.MaxBlock = binary.BigEndian.Uint32(d[8:12])
		}
	}
	if !gotExport {
		return info, errors.New("nbd: server sent no NBD_INFO_EXPORT")
	}
	if info.Name == "" {
		info.Name = name
	}
	return info, nil
}

// ExportName ends negotiation with the old NBD_OPT_EXPORT_NAME. The server
// closes the connection if there is no such export.
func (n *Negotiator) ExportName(name string) (*Client, error) {
	if err := n.SendOption(OptExportName, []byte(name)); err != nil {
		return nil, err
	}
	l := 10
	if !n.noZeroes {
		l += exportNameZeroes
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(n.br, b); err != nil {
		return nil, fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME %q: %w", name, err)
	}
	for _, z := range b[10:] {
		if z != 0 {
			return nil, errors.New("nbd: non-zero padding after NBD_OPT_EXPORT_NAME")
		}
	}
	info := ExportInfo{Name: name, Size: binary.BigEndian.Uint64(b[0:8]), Flags: binary.BigEndian.Uint16(b[8:10])}
	return n.start(info), nil
}

// Abort sends NBD_OPT_ABORT, waits for the ACK (if any) and closes.
func (n *Negotiator) Abort() error {
	defer n.nc.Close()
	_, err := n.Option(OptAbort, nil)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// Options configure Dial.
type Options struct {
	Export            string
	StructuredReplies bool
	// UseExportName enters transmission with NBD_OPT_EXPORT_NAME instead of
	// NBD_OPT_GO.
	UseExportName bool
}

// Dial connects to an NBD server and negotiates an export.
func Dial(network, addr string, o Options) (*Client, error) {
	nc, err := net.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	c, err := Negotiate(nc, o)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Negotiate runs the handshake on nc.
func Negotiate(nc net.Conn, o Options) (*Client, error) {
	n, err := Handshake(nc, ClientFixedNewstyle|ClientNoZeroes)
	if err != nil {
		return nil, err
	}
	if o.StructuredReplies {
		if err := n.StructuredReplies(); err != nil {
			return nil, err
		}
	}
	if o.UseExportName {
		return n.ExportName(o.Export)
	}
	return n.Go(o.Export)
}
