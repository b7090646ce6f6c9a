package nbd

// The handshake (fixed newstyle negotiation):
//
//	S: "NBDMAGIC" (64) "IHAVEOPT" (64) handshake flags (16)
//	C: client flags (32)
//	then, repeated until transmission or abort:
//	C: "IHAVEOPT" (64) option (32) length (32) data
//	S: magicOptionReply (64) option (32) reply type (32) length (32) data
//	   (one or more replies; the last is NBD_REP_ACK or an error)
//
// NBD_OPT_EXPORT_NAME is answered instead with size (64), transmission
// flags (16) and, unless the client set NBD_FLAG_C_NO_ZEROES, 124 zero bytes.
// After the NBD_REP_ACK to NBD_OPT_STARTTLS everything goes through TLS
// (tls.go).

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// catalog is what the handshake needs from the server. Tests and fuzzers
// provide their own.
type catalog interface {
	list() []*export            // exports in name order
	lookup(name string) *export // nil if unknown
	attach(ex *export) bool     // commit this connection to ex; false if ex was removed
	shuttingDown() bool
}

// negotiated is the outcome of a successful handshake.
type negotiated struct {
	ex         *export
	structured bool
}

const (
	// maxOptionBytes bounds the data of one option: the largest legitimate
	// one, NBD_OPT_GO with a 4096-byte name and a list of info requests, is
	// far smaller. Larger data is skipped and refused with
	// NBD_REP_ERR_TOO_BIG.
	maxOptionBytes = 64 << 10
	// maxOptions bounds the options of one handshake; a client haggling
	// longer is cut off, as the spec allows against denial of service.
	maxOptions = 256
)

// negotiate runs the handshake on r and w until the client enters
// transmission (the result names the export, already attached) or the
// session ends (a non-nil error: errAbort, a protocol violation, or an IO
// error).
func negotiate(r *bufio.Reader, w *bufio.Writer, cat catalog) (negotiated, error) {
	var b [18]byte
	binary.BigEndian.PutUint64(b[0:8], magicNBD)
	binary.BigEndian.PutUint64(b[8:16], magicOption)
	binary.BigEndian.PutUint16(b[16:18], flagFixedNewstyle|flagNoZeroes)
	w.Write(b[:])
	if err := w.Flush(); err != nil {
		return negotiated{}, err
	}
	if _, err := io.ReadFull(r, b[:4]); err != nil {
		return negotiated{}, err
	}
	cflags := binary.BigEndian.Uint32(b[:4])
	if cflags&^clientFlagsKnown != 0 {
		return negotiated{}, fmt.Errorf("nbd handshake: unknown client flags %#x", cflags)
	}
	// A client without NBD_FLAG_C_FIXED_NEWSTYLE gets fixed-newstyle
	// replies anyway, which the spec permits; but TLS needs fixed newstyle.
	h := haggler{r: r, w: w, cat: cat, noZeroes: cflags&flagCNoZeroes != 0}
	if up, ok := cat.(tlsUpgrader); ok && up.tlsMode() != TLSOff {
		if cflags&flagCFixedNewstyle == 0 {
			if up.tlsMode() == TLSRequire {
				return negotiated{}, errors.New("nbd handshake: TLS is required and the client does not speak fixed newstyle")
			}
		} else {
			h.up, h.tlsMode = up, up.tlsMode()
		}
	}
	for range maxOptions {
		done, err := h.option()
		if err != nil {
			return negotiated{}, err
		}
		if done {
			return negotiated{ex: h.ex, structured: h.structured}, nil
		}
	}
	return negotiated{}, fmt.Errorf("nbd handshake: more than %d options", maxOptions)
}

// haggler holds the state of option haggling on one connection.
type haggler struct {
	r        *bufio.Reader
	w        *bufio.Writer
	cat      catalog
	noZeroes bool

	// up upgrades the connection to TLS, when tlsMode is not TLSOff;
	// tlsActive is set once it did. What was negotiated before is then
	// forgotten.
	up        tlsUpgrader
	tlsMode   TLSMode
	tlsActive bool

	structured bool    // NBD_OPT_STRUCTURED_REPLY was acknowledged
	ex         *export // set when transmission begins
}

// option reads and answers one option. done reports that transmission
// begins.
func (h *haggler) option() (done bool, err error) {
	var b [16]byte
	if _, err := io.ReadFull(h.r, b[:]); err != nil {
		return false, err
	}
	if m := binary.BigEndian.Uint64(b[0:8]); m != magicOption {
		return false, fmt.Errorf("nbd handshake: bad option magic %#x", m)
	}
	opt := option(binary.BigEndian.Uint32(b[8:12]))
	n := binary.BigEndian.Uint32(b[12:16])
	if n > maxOptionBytes {
		if opt == optExportName {
			return false, fmt.Errorf("nbd handshake: %v name of %d bytes", opt, n)
		}
		if _, err := h.r.Discard(int(n)); err != nil {
			return false, err
		}
		if h.tlsRequired(opt) {
			return false, h.reply(opt, repErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first")
		}
		return false, h.reply(opt, repErrTooBig, fmt.Sprintf("option data of %d bytes exceeds %d", n, maxOptionBytes))
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(h.r, data); err != nil {
		return false, err
	}

	if h.cat.shuttingDown() && opt != optAbort {
		if opt == optExportName {
			return false, errServerClosing
		}
		return false, h.reply(opt, repErrShutdown, "server is shutting down")
	}
	if h.tlsRequired(opt) {
		if opt == optExportName {
			// It cannot be refused politely.
			return false, fmt.Errorf("nbd handshake: %v before NBD_OPT_STARTTLS, and TLS is required", opt)
		}
		return false, h.reply(opt, repErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first")
	}
	switch opt {
	case optExportName:
		return true, h.exportName(data)
	case optStartTLS:
		if h.tlsMode != TLSOff {
			return false, h.startTLS(n)
		}
	case optAbort:
		// The client may already have hung up; the ACK is a courtesy.
		h.reply(opt, repAck, "")
		return false, errAbort
	case optList:
		return false, h.list(data)
	case optInfo, optGo:
		return h.info(opt, data)
	case optStructuredReply:
		if n != 0 {
			return false, h.reply(opt, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
		}
		h.structured = true
		return false, h.reply(opt, repAck, "")
	}
	// Including NBD_OPT_STARTTLS on a server without TLS, metadata
	// contexts and extended headers.
	return false, h.reply(opt, repErrUnsup, fmt.Sprintf("option %v is not supported", opt))
}

// tlsRequired reports whether opt must be refused because TLS is required
// and not yet active: every option but NBD_OPT_STARTTLS and NBD_OPT_ABORT.
func (h *haggler) tlsRequired(opt option) bool {
	return h.tlsMode == TLSRequire && !h.tlsActive && opt != optStartTLS && opt != optAbort
}

// startTLS answers NBD_OPT_STARTTLS (of n bytes of data) on a server with
// TLS: NBD_REP_ACK, then the TLS handshake, whose failure ends the session
// since the client can no longer go on in plain text. Structured replies
// negotiated before are forgotten: everything negotiated in plain text
// could have been altered on the way.
func (h *haggler) startTLS(n uint32) error {
	switch {
	case h.tlsActive:
		return h.reply(optStartTLS, repErrInvalid, "TLS is already active")
	case n != 0:
		return h.reply(optStartTLS, repErrInvalid, "NBD_OPT_STARTTLS takes no data")
	case h.r.Buffered() > 0:
		// Plain text sent after STARTTLS, before its ACK: whatever it is,
		// it would be taken for part of the TLS handshake.
		return fmt.Errorf("nbd handshake: %d bytes sent after %v before its reply", h.r.Buffered(), optStartTLS)
	}
	if err := h.reply(optStartTLS, repAck, ""); err != nil {
		return err
	}
	if err := h.up.startTLS(); err != nil {
		return fmt.Errorf("nbd handshake: TLS: %w", err)
	}
	h.tlsActive = true
	h.structured = false
	return nil
}

// exportName answers NBD_OPT_EXPORT_NAME, which cannot fail politely: an
// unknown name ends the session.
func (h *haggler) exportName(data []byte) error {
	name := string(data)
	ex := h.cat.lookup(name)
	if ex == nil || !h.cat.attach(ex) {
		return fmt.Errorf("nbd handshake: %v: no export %q", optExportName, name)
	}
	var b [10 + zeroesPadLen]byte
	binary.BigEndian.PutUint64(b[0:8], ex.size)
	binary.BigEndian.PutUint16(b[8:10], uint16(ex.txFlagsFor(h.structured)))
	n := len(b)
	if h.noZeroes {
		n = 10
	}
	h.w.Write(b[:n])
	h.ex = ex
	return h.w.Flush()
}

// list answers NBD_OPT_LIST with one NBD_REP_SERVER per export.
func (h *haggler) list(data []byte) error {
	if len(data) != 0 {
		return h.reply(optList, repErrInvalid, "NBD_OPT_LIST takes no data")
	}
	for _, ex := range h.cat.list() {
		p := make([]byte, 4, 4+len(ex.Name)+len(ex.Description))
		binary.BigEndian.PutUint32(p, uint32(len(ex.Name)))
		p = append(append(p, ex.Name...), ex.Description...)
		h.send(optList, repServer, p)
	}
	return h.reply(optList, repAck, "")
}

// info answers NBD_OPT_INFO and NBD_OPT_GO, whose data is
//
//	name length (32) | name | number of info requests (16) | info types (16 each)
//
// with NBD_INFO_EXPORT, whichever of NAME, DESCRIPTION and BLOCK_SIZE were
// asked for, and NBD_REP_ACK. After the ACK to NBD_OPT_GO transmission
// begins.
func (h *haggler) info(opt option, data []byte) (done bool, err error) {
	if len(data) < 6 {
		return false, h.reply(opt, repErrInvalid, "option data shorter than 6 bytes")
	}
	nameLen := uint64(binary.BigEndian.Uint32(data[0:4]))
	if nameLen > uint64(len(data)-6) {
		return false, h.reply(opt, repErrInvalid, "name length exceeds option data")
	}
	name := string(data[4 : 4+nameLen])
	reqs := data[4+nameLen:]
	nreq := int(binary.BigEndian.Uint16(reqs[0:2]))
	if len(reqs) != 2+2*nreq {
		return false, h.reply(opt, repErrInvalid, "information request count does not match option length")
	}
	ex := h.cat.lookup(name)
	if ex == nil || (opt == optGo && !h.cat.attach(ex)) {
		return false, h.reply(opt, repErrUnknown, fmt.Sprintf("no export %q", name))
	}

	var b [14]byte
	binary.BigEndian.PutUint16(b[0:2], uint16(infoExport))
	binary.BigEndian.PutUint64(b[2:10], ex.size)
	binary.BigEndian.PutUint16(b[10:12], uint16(ex.txFlagsFor(h.structured)))
	h.send(opt, repInfo, b[:12])
	var sent [infoBlockSize + 1]bool
	for i := range nreq {
		t := infoType(binary.BigEndian.Uint16(reqs[2+2*i:]))
		if t > infoBlockSize || sent[t] {
			continue // unknown types are ignored, as the spec requires
		}
		sent[t] = true
		switch t {
		case infoName:
			h.send(opt, repInfo, append(binary.BigEndian.AppendUint16(nil, uint16(infoName)), ex.Name...))
		case infoDescription:
			if ex.Description != "" {
				h.send(opt, repInfo, append(binary.BigEndian.AppendUint16(nil, uint16(infoDescription)), ex.Description...))
			}
		case infoBlockSize:
			binary.BigEndian.PutUint16(b[0:2], uint16(infoBlockSize))
			binary.BigEndian.PutUint32(b[2:6], ex.minBlock)
			binary.BigEndian.PutUint32(b[6:10], ex.prefs)
			binary.BigEndian.PutUint32(b[10:14], maxPayloadBytes)
			h.send(opt, repInfo, b[:14])
		}
	}
	if err := h.reply(opt, repAck, ""); err != nil {
		return false, err
	}
	if opt == optGo {
		h.ex = ex
		return true, nil
	}
	return false, nil
}

// send buffers one option reply.
func (h *haggler) send(opt option, typ repType, data []byte) {
	var b [20]byte
	binary.BigEndian.PutUint64(b[0:8], magicOptionReply)
	binary.BigEndian.PutUint32(b[8:12], uint32(opt))
	binary.BigEndian.PutUint32(b[12:16], uint32(typ))
	binary.BigEndian.PutUint32(b[16:20], uint32(len(data)))
	h.w.Write(b[:])
	h.w.Write(data)
}

// reply sends the final reply to an option, with an optional message for
// error replies, and flushes everything buffered.
func (h *haggler) reply(opt option, typ repType, msg string) error {
	h.send(opt, typ, []byte(msg))
	return h.w.Flush()
}
