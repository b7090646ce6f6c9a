package nbdremote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"syscall"
)

// export is what the handshake learned about an export.
type export struct {
	size       uint64
	flags      uint16 // transmission flags
	structured bool   // structured replies negotiated
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
	var hello [18]byte
	if _, err := io.ReadFull(r, hello[:]); err != nil {
		return false, fmt.Errorf("read the server's greeting: %w", eofAsProtocol(err))
	}
	if m := binary.BigEndian.Uint64(hello[0:]); m != magicNBD {
		return false, fmt.Errorf("greeting magic %#x is not NBDMAGIC: not an NBD server: %w", m, ErrProtocol)
	}
	switch m := binary.BigEndian.Uint64(hello[8:]); m {
	case magicOption:
	case magicOldstyle:
		return false, fmt.Errorf("the server speaks the oldstyle handshake, which this client does not: %w", ErrProtocol)
	default:
		return false, fmt.Errorf("greeting's second magic %#x is not IHAVEOPT: %w", m, ErrProtocol)
	}
	hflags := binary.BigEndian.Uint16(hello[16:])
	if hflags&handshakeFixedNewstyle == 0 {
		return false, fmt.Errorf("the server does not offer fixed newstyle negotiation: %w", ErrProtocol)
	}
	cflags := clientFixedNewstyle
	noZeroes = hflags&handshakeNoZeroes != 0
	if noZeroes {
		cflags |= clientNoZeroes
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
	if err := sendOption(w, optStructuredReply, nil); err != nil {
		return ex, err
	}
	typ, data, err := readOptionReply(r, optStructuredReply)
	if err != nil {
		return ex, err
	}
	switch {
	case typ == repAck:
		ex.structured = true
	case typ&optReplyErrorBit != 0:
		// Any refusal leaves simple replies; nothing else changes.
	default:
		return ex, fmt.Errorf("reply type %#x (%d bytes) to NBD_OPT_STRUCTURED_REPLY: %w", typ, len(data), ErrProtocol)
	}

	goData := make([]byte, 4+len(name)+2+2)
	binary.BigEndian.PutUint32(goData, uint32(len(name)))
	copy(goData[4:], name)
	binary.BigEndian.PutUint16(goData[4+len(name):], 1)
	binary.BigEndian.PutUint16(goData[6+len(name):], infoBlockSize)
	if err := sendOption(w, optGo, goData); err != nil {
		return ex, err
	}
	haveExport := false
	for {
		typ, data, err := readOptionReply(r, optGo)
		if err != nil {
			return ex, err
		}
		switch typ {
		case repInfo:
			if err := ex.parseInfo(data); err != nil {
				return ex, err
			}
			if len(data) >= 2 && binary.BigEndian.Uint16(data) == infoExport {
				haveExport = true
			}
			continue
		case repAck:
			if !haveExport {
				return ex, fmt.Errorf("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT: %w", ErrProtocol)
			}
			return ex, ex.check()
		case repErrUnsup:
			return exportName(r, w, name, noZeroes, ex.structured)
		}
		return ex, optionError(typ, data, name)
	}
}

// exportName is the fallback for servers without NBD_OPT_GO: the export is
// entered at once, and a refused name is a closed connection.
func exportName(r io.Reader, w io.Writer, name string, noZeroes, structured bool) (export, error) {
	ex := export{structured: structured}
	if err := sendOption(w, optExportName, []byte(name)); err != nil {
		return ex, err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ex, fmt.Errorf("the server closed the connection at NBD_OPT_EXPORT_NAME %q: %w", name, ErrExportRefused)
		}
		return ex, fmt.Errorf("read NBD_OPT_EXPORT_NAME reply: %w", err)
	}
	ex.size = binary.BigEndian.Uint64(buf)
	ex.flags = binary.BigEndian.Uint16(buf[8:])
	return ex, ex.check()
}

// parseInfo takes one NBD_REP_INFO payload; unknown types are ignored.
func (ex *export) parseInfo(data []byte) error {
	if len(data) < 2 {
		return fmt.Errorf("NBD_REP_INFO of %d bytes: %w", len(data), ErrProtocol)
	}
	switch t := binary.BigEndian.Uint16(data); t {
	case infoExport:
		if len(data) != 12 {
			return fmt.Errorf("NBD_INFO_EXPORT of %d bytes, want 12: %w", len(data), ErrProtocol)
		}
		ex.size = binary.BigEndian.Uint64(data[2:])
		ex.flags = binary.BigEndian.Uint16(data[10:])
	case infoBlockSize:
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
	if ex.flags&txHasFlags == 0 {
		return fmt.Errorf("transmission flags %#x lack NBD_FLAG_HAS_FLAGS: %w", ex.flags, ErrProtocol)
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
	maxPayload = defaultMaxPayload
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

func sendOption(w io.Writer, opt uint32, data []byte) error {
	buf := make([]byte, 16+len(data))
	binary.BigEndian.PutUint64(buf, magicOption)
	binary.BigEndian.PutUint32(buf[8:], opt)
	binary.BigEndian.PutUint32(buf[12:], uint32(len(data)))
	copy(buf[16:], data)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("send option %d: %w", opt, err)
	}
	return nil
}

// readOptionReply reads one option reply to opt and returns its type and
// payload.
func readOptionReply(r io.Reader, opt uint32) (typ uint32, data []byte, err error) {
	var h [20]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, fmt.Errorf("read reply to option %d: %w", opt, eofAsProtocol(err))
	}
	if m := binary.BigEndian.Uint64(h[0:]); m != magicOptionReply {
		return 0, nil, fmt.Errorf("option reply magic %#x: %w", m, ErrProtocol)
	}
	if o := binary.BigEndian.Uint32(h[8:]); o != opt {
		return 0, nil, fmt.Errorf("reply to option %d while option %d was asked: %w", o, opt, ErrProtocol)
	}
	typ = binary.BigEndian.Uint32(h[12:])
	n := binary.BigEndian.Uint32(h[16:])
	if n > maxOptionReply {
		return 0, nil, fmt.Errorf("option reply of %d bytes exceeds %d: %w", n, maxOptionReply, ErrProtocol)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, nil, fmt.Errorf("read reply to option %d: %w", opt, eofAsProtocol(err))
	}
	return typ, data, nil
}

// optionError turns an error reply to NBD_OPT_GO into an error naming the
// export and quoting the server's message.
func optionError(typ uint32, data []byte, name string) error {
	msg := ""
	if len(data) > 0 {
		msg = fmt.Sprintf(" (%q)", sanitize(data))
	}
	switch typ {
	case repErrUnknown:
		return fmt.Errorf("export %q: the server has no such export%s: %w", name, msg, ErrExportRefused)
	case repErrPolicy:
		return fmt.Errorf("export %q: refused by the server's policy%s: %w", name, msg, ErrExportRefused)
	case repErrTLSReqd:
		return fmt.Errorf("export %q: the server requires TLS%s: use an nbds:// or nbds+unix:// URI: %w", name, msg, ErrTLSNotSupported)
	case repErrShutdown:
		return fmt.Errorf("export %q: the server is shutting down%s: %w", name, msg, syscall.ESHUTDOWN)
	case repErrInvalid, repErrPlatform, repErrBlockSizeReqd, repErrTooBig:
		return fmt.Errorf("export %q: the server refused NBD_OPT_GO with error %#x%s: %w", name, typ, msg, ErrExportRefused)
	}
	if typ&optReplyErrorBit != 0 {
		return fmt.Errorf("export %q: the server refused NBD_OPT_GO with error %#x%s: %w", name, typ, msg, ErrExportRefused)
	}
	return fmt.Errorf("export %q: unexpected reply type %#x to NBD_OPT_GO: %w", name, typ, ErrProtocol)
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
