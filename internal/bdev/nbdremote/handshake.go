package nbdremote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"syscall"

	"blockcache/internal/nbdproto"
)

// export is what the handshake learned about an export.
type export struct {
	size       uint64
	flags      nbdproto.TxFlags // transmission flags
	structured bool             // structured replies negotiated
	// Block size constraints (NBD_INFO_BLOCK_SIZE); hasBlockSize is false
	// when the server sent none.
	minBlock, prefBlock, maxBlock uint32
	hasBlockSize                  bool
}

// negotiate runs the fixed newstyle handshake for the export name on r/w:
// NBD_OPT_STRUCTURED_REPLY (taken when the server agrees), then NBD_OPT_GO
// asking for NBD_INFO_BLOCK_SIZE, or NBD_OPT_EXPORT_NAME when the server
// does not know NBD_OPT_GO. The caller bounds it in time.
func negotiate(r io.Reader, w io.Writer, name string) (export, error) {
	noZeroes, err := greet(r, w)
	if err != nil {
		return export{}, err
	}
	return haggle(r, w, name, noZeroes)
}

// greet reads the server's greeting and answers with the client flags.
// noZeroes is whether NBD_OPT_EXPORT_NAME's reply omits its padding.
func greet(r io.Reader, w io.Writer) (noZeroes bool, err error) {
	var hello [nbdproto.GreetingLen]byte
	if _, err := io.ReadFull(r, hello[:]); err != nil {
		return false, fmt.Errorf("read the server's greeting: %w", eofAsProtocol(err))
	}
	if m := binary.BigEndian.Uint64(hello[0:]); m != nbdproto.MagicNBD {
		return false, fmt.Errorf("greeting magic %#x is not NBDMAGIC: not an NBD server: %w", m, ErrProtocol)
	}
	switch m := binary.BigEndian.Uint64(hello[8:]); m {
	case nbdproto.MagicOption:
	case nbdproto.MagicOldstyle:
		return false, fmt.Errorf("the server speaks the oldstyle handshake, which this client does not: %w", ErrProtocol)
	default:
		return false, fmt.Errorf("greeting's second magic %#x is not IHAVEOPT: %w", m, ErrProtocol)
	}
	hflags := binary.BigEndian.Uint16(hello[16:])
	if hflags&nbdproto.FlagFixedNewstyle == 0 {
		return false, fmt.Errorf("the server does not offer fixed newstyle negotiation: %w", ErrProtocol)
	}
	cflags := nbdproto.FlagCFixedNewstyle
	noZeroes = hflags&nbdproto.FlagNoZeroes != 0
	if noZeroes {
		cflags |= nbdproto.FlagCNoZeroes
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], cflags)
	if _, err := w.Write(b[:]); err != nil {
		return false, fmt.Errorf("send client flags: %w", err)
	}
	return noZeroes, nil
}

// haggle runs the options after the greeting: NBD_OPT_STRUCTURED_REPLY,
// then NBD_OPT_GO or NBD_OPT_EXPORT_NAME.
func haggle(r io.Reader, w io.Writer, name string, noZeroes bool) (export, error) {
	var ex export
	if err := sendOption(w, nbdproto.OptStructuredReply, nil); err != nil {
		return ex, err
	}
	typ, data, err := readOptionReply(r, nbdproto.OptStructuredReply)
	if err != nil {
		return ex, err
	}
	switch {
	case typ == nbdproto.RepAck:
		ex.structured = true
	case typ&nbdproto.RepFlagError != 0:
		// Any refusal leaves simple replies; nothing else changes.
	default:
		return ex, fmt.Errorf("reply %v (%d bytes) to NBD_OPT_STRUCTURED_REPLY: %w", typ, len(data), ErrProtocol)
	}

	goData := make([]byte, 4+len(name)+2+2)
	binary.BigEndian.PutUint32(goData, uint32(len(name)))
	copy(goData[4:], name)
	binary.BigEndian.PutUint16(goData[4+len(name):], 1)
	binary.BigEndian.PutUint16(goData[6+len(name):], uint16(nbdproto.InfoBlockSize))
	if err := sendOption(w, nbdproto.OptGo, goData); err != nil {
		return ex, err
	}
	haveExport := false
	for {
		typ, data, err := readOptionReply(r, nbdproto.OptGo)
		if err != nil {
			return ex, err
		}
		switch typ {
		case nbdproto.RepInfo:
			if err := ex.parseInfo(data); err != nil {
				return ex, err
			}
			if len(data) >= 2 && nbdproto.InfoType(binary.BigEndian.Uint16(data)) == nbdproto.InfoExport {
				haveExport = true
			}
			continue
		case nbdproto.RepAck:
			if !haveExport {
				return ex, fmt.Errorf("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT: %w", ErrProtocol)
			}
			return ex, ex.check()
		case nbdproto.RepErrUnsup:
			return exportName(r, w, name, noZeroes, ex.structured)
		}
		return ex, optionError(typ, data, name)
	}
}

// exportName is the fallback for servers without NBD_OPT_GO: the export is
// entered at once, and a refused name is a closed connection.
func exportName(r io.Reader, w io.Writer, name string, noZeroes, structured bool) (export, error) {
	ex := export{structured: structured}
	if err := sendOption(w, nbdproto.OptExportName, []byte(name)); err != nil {
		return ex, err
	}
	n := nbdproto.ExportNameReplyLen
	if !noZeroes {
		n += nbdproto.ZeroesPadLen
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ex, fmt.Errorf("the server closed the connection at NBD_OPT_EXPORT_NAME %q: %w", name, ErrExportRefused)
		}
		return ex, fmt.Errorf("read NBD_OPT_EXPORT_NAME reply: %w", err)
	}
	ex.size = binary.BigEndian.Uint64(buf)
	ex.flags = nbdproto.TxFlags(binary.BigEndian.Uint16(buf[8:]))
	return ex, ex.check()
}

// parseInfo takes one NBD_REP_INFO payload; unknown types are ignored.
func (ex *export) parseInfo(data []byte) error {
	if len(data) < 2 {
		return fmt.Errorf("NBD_REP_INFO of %d bytes: %w", len(data), ErrProtocol)
	}
	switch t := nbdproto.InfoType(binary.BigEndian.Uint16(data)); t {
	case nbdproto.InfoExport:
		if len(data) != 12 {
			return fmt.Errorf("NBD_INFO_EXPORT of %d bytes, want 12: %w", len(data), ErrProtocol)
		}
		ex.size = binary.BigEndian.Uint64(data[2:])
		ex.flags = nbdproto.TxFlags(binary.BigEndian.Uint16(data[10:]))
	case nbdproto.InfoBlockSize:
		if len(data) != 14 {
			return fmt.Errorf("NBD_INFO_BLOCK_SIZE of %d bytes, want 14: %w", len(data), ErrProtocol)
		}
		ex.minBlock = binary.BigEndian.Uint32(data[2:])
		ex.prefBlock = binary.BigEndian.Uint32(data[6:])
		ex.maxBlock = binary.BigEndian.Uint32(data[10:])
		ex.hasBlockSize = true
	}
	return nil
}

// check validates what the server said about the export.
func (ex *export) check() error {
	if ex.flags&nbdproto.TxHasFlags == 0 {
		return fmt.Errorf("transmission flags %v lack NBD_FLAG_HAS_FLAGS: %w", ex.flags, ErrProtocol)
	}
	if ex.size > 1<<62 {
		return fmt.Errorf("export size %d is out of range: %w", ex.size, ErrProtocol)
	}
	if !ex.hasBlockSize {
		return nil
	}
	pow2 := func(v uint32) bool { return v != 0 && bits.OnesCount32(v) == 1 }
	switch {
	case !pow2(ex.minBlock) || ex.minBlock > 64<<10:
		return fmt.Errorf("minimum block size %d is not a power of two up to 64 KiB: %w", ex.minBlock, ErrProtocol)
	case !pow2(ex.prefBlock) || ex.prefBlock < ex.minBlock:
		return fmt.Errorf("preferred block size %d is not a power of two at least the minimum %d: %w", ex.prefBlock, ex.minBlock, ErrProtocol)
	case ex.maxBlock < ex.minBlock || (ex.maxBlock != 0xffffffff && ex.maxBlock%ex.minBlock != 0):
		return fmt.Errorf("maximum block size %d is not a multiple of the minimum %d: %w", ex.maxBlock, ex.minBlock, ErrProtocol)
	}
	return nil
}

// geometry chooses the device's block size and payload bound: the
// server's preferred block size when it is between 512 bytes and 64 KiB,
// else the larger of 512 and the server's minimum. The export's tail past
// the last whole block is not used.
func (ex *export) geometry() (blockSize uint32, numBlocks uint64, maxPayload uint32, err error) {
	blockSize = 512
	maxPayload = nbdproto.DefaultMaxPayload
	if ex.hasBlockSize {
		switch {
		case ex.prefBlock >= 512 && ex.prefBlock <= 64<<10:
			blockSize = ex.prefBlock
		case ex.minBlock > 512:
			blockSize = ex.minBlock
		}
		if ex.maxBlock < maxPayload {
			maxPayload = ex.maxBlock
		}
	}
	maxPayload -= maxPayload % blockSize
	if maxPayload == 0 {
		return 0, 0, 0, fmt.Errorf("maximum block size %d is below the block size %d: %w", ex.maxBlock, blockSize, ErrProtocol)
	}
	numBlocks = ex.size / uint64(blockSize)
	if numBlocks == 0 {
		return 0, 0, 0, fmt.Errorf("export of %d bytes is smaller than one %d-byte block: %w", ex.size, blockSize, ErrProtocol)
	}
	return blockSize, numBlocks, maxPayload, nil
}

func sendOption(w io.Writer, opt nbdproto.Option, data []byte) error {
	if _, err := w.Write(nbdproto.AppendOption(nil, opt, data)); err != nil {
		return fmt.Errorf("send %v: %w", opt, err)
	}
	return nil
}

// readOptionReply reads one option reply to opt and returns its type and
// payload.
func readOptionReply(r io.Reader, opt nbdproto.Option) (typ nbdproto.RepType, data []byte, err error) {
	var b [nbdproto.OptionReplyLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, nil, fmt.Errorf("read reply to %v: %w", opt, eofAsProtocol(err))
	}
	h, err := nbdproto.ParseOptionReply(&b)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %w", err, ErrProtocol)
	}
	if h.Option != opt {
		return 0, nil, fmt.Errorf("reply to %v while %v was asked: %w", h.Option, opt, ErrProtocol)
	}
	if h.Length > maxOptionReply {
		return 0, nil, fmt.Errorf("option reply of %d bytes exceeds %d: %w", h.Length, maxOptionReply, ErrProtocol)
	}
	data = make([]byte, h.Length)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, nil, fmt.Errorf("read reply to %v: %w", opt, eofAsProtocol(err))
	}
	return h.Type, data, nil
}

// optionError turns an error reply to NBD_OPT_GO into an error naming the
// export and quoting the server's message.
func optionError(typ nbdproto.RepType, data []byte, name string) error {
	msg := ""
	if len(data) > 0 {
		msg = fmt.Sprintf(" (%q)", sanitize(data))
	}
	switch typ {
	case nbdproto.RepErrUnknown:
		return fmt.Errorf("export %q: the server has no such export%s: %w", name, msg, ErrExportRefused)
	case nbdproto.RepErrPolicy:
		return fmt.Errorf("export %q: refused by the server's policy%s: %w", name, msg, ErrExportRefused)
	case nbdproto.RepErrTLSReqd:
		return fmt.Errorf("export %q: the server requires TLS%s: use an nbds:// or nbds+unix:// URI: %w", name, msg, ErrTLSNotSupported)
	case nbdproto.RepErrShutdown:
		return fmt.Errorf("export %q: the server is shutting down%s: %w", name, msg, syscall.ESHUTDOWN)
	case nbdproto.RepErrInvalid, nbdproto.RepErrPlatform, nbdproto.RepErrBlockSize, nbdproto.RepErrTooBig:
		return fmt.Errorf("export %q: the server refused NBD_OPT_GO with %v%s: %w", name, typ, msg, ErrExportRefused)
	}
	if typ&nbdproto.RepFlagError != 0 {
		return fmt.Errorf("export %q: the server refused NBD_OPT_GO with %v%s: %w", name, typ, msg, ErrExportRefused)
	}
	return fmt.Errorf("export %q: unexpected reply %v to NBD_OPT_GO: %w", name, typ, ErrProtocol)
}

// sanitize keeps a server's message printable and short.
func sanitize(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}

// eofAsProtocol says that a server hanging up mid-message broke the
// protocol, keeping other errors (timeouts, resets) as they are.
func eofAsProtocol(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errHungUp
	}
	return err
}
