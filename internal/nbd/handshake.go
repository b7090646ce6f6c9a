package nbd

// The handshake (fixed newstyle negotiation):
//
//	S: "NBDMAGIC" (64) "IHAVEOPT" (64) handshake flags (16)
//	C: client flags (32)
//	then, repeated until transmission or abort:
//	C: "IHAVEOPT" (64) option (32) length (32) data
//	S: MagicOptionReply (64) option (32) reply type (32) length (32) data
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

	"blockcache/internal/nbdproto"
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
	var b [nbdproto.GreetingLen]byte
	binary.BigEndian.PutUint64(b[0:8], nbdproto.MagicNBD)
	binary.BigEndian.PutUint64(b[8:16], nbdproto.MagicOption)
	binary.BigEndian.PutUint16(b[16:18], nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes)
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
	h := haggler{r: r, w: w, cat: cat, noZeroes: cflags&nbdproto.FlagCNoZeroes != 0}
	if up, ok := cat.(tlsUpgrader); ok && up.tlsMode() != TLSOff {
		if cflags&nbdproto.FlagCFixedNewstyle == 0 {
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
	var b [nbdproto.OptionLen]byte
	if _, err := io.ReadFull(h.r, b[:]); err != nil {
		return false, err
	}
	oh, err := nbdproto.ParseOption(&b)
	if err != nil {
		return false, fmt.Errorf("nbd handshake: %w", err)
	}
	opt, n := oh.Option, oh.Length
	if n > maxOptionBytes {
		if opt == nbdproto.OptExportName {
			return false, fmt.Errorf("nbd handshake: %v name of %d bytes", opt, n)
		}
		if _, err := h.r.Discard(int(n)); err != nil {
			return false, err
		}
		if h.tlsRequired(opt) {
			return false, h.reply(opt, nbdproto.RepErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first")
		}
		return false, h.reply(opt, nbdproto.RepErrTooBig, fmt.Sprintf("option data of %d bytes exceeds %d", n, maxOptionBytes))
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(h.r, data); err != nil {
		return false, err
	}

	if h.cat.shuttingDown() && opt != nbdproto.OptAbort {
		if opt == nbdproto.OptExportName {
			return false, errServerClosing
		}
		return false, h.reply(opt, nbdproto.RepErrShutdown, "server is shutting down")
	}
	if h.tlsRequired(opt) {
		if opt == nbdproto.OptExportName {
			// It cannot be refused politely.
			return false, fmt.Errorf("nbd handshake: %v before NBD_OPT_STARTTLS, and TLS is required", opt)
		}
		return false, h.reply(opt, nbdproto.RepErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first")
	}
	switch opt {
	case nbdproto.OptExportName:
		return true, h.exportName(data)
	case nbdproto.OptStartTLS:
		if h.tlsMode != TLSOff {
			return false, h.startTLS(n)
		}
	case nbdproto.OptAbort:
		// The client may already have hung up; the ACK is a courtesy.
		h.reply(opt, nbdproto.RepAck, "")
		return false, errAbort
	case nbdproto.OptList:
		return false, h.list(data)
	case nbdproto.OptInfo, nbdproto.OptGo:
		return h.info(opt, data)
	case nbdproto.OptStructuredReply:
		if n != 0 {
			return false, h.reply(opt, nbdproto.RepErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
		}
		h.structured = true
		return false, h.reply(opt, nbdproto.RepAck, "")
	}
	// Including NBD_OPT_STARTTLS on a server without TLS, metadata
	// contexts and extended headers.
	return false, h.reply(opt, nbdproto.RepErrUnsup, fmt.Sprintf("option %v is not supported", opt))
}

// tlsRequired reports whether opt must be refused because TLS is required
// and not yet active: every option but NBD_OPT_STARTTLS and NBD_OPT_ABORT.
func (h *haggler) tlsRequired(opt nbdproto.Option) bool {
	return h.tlsMode == TLSRequire && !h.tlsActive && opt != nbdproto.OptStartTLS && opt != nbdproto.OptAbort
}

// startTLS answers NBD_OPT_STARTTLS (of n bytes of data) on a server with
// TLS: NBD_REP_ACK, then the TLS handshake, whose failure ends the session
// since the client can no longer go on in plain text. Structured replies
// negotiated before are forgotten: everything negotiated in plain text
// could have been altered on the way.
func (h *haggler) startTLS(n uint32) error {
	switch {
	case h.tlsActive:
		return h.reply(nbdproto.OptStartTLS, nbdproto.RepErrInvalid, "TLS is already active")
	case n != 0:
		return h.reply(nbdproto.OptStartTLS, nbdproto.RepErrInvalid, "NBD_OPT_STARTTLS takes no data")
	case h.r.Buffered() > 0:
		// Plain text sent after STARTTLS, before its ACK: whatever it is,
		// it would be taken for part of the TLS handshake.
		return fmt.Errorf("nbd handshake: %d bytes sent after %v before its reply", h.r.Buffered(), nbdproto.OptStartTLS)
	}
	if err := h.reply(nbdproto.OptStartTLS, nbdproto.RepAck, ""); err != nil {
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
		return fmt.Errorf("nbd handshake: %v: no export %q", nbdproto.OptExportName, name)
	}
	var b [nbdproto.ExportNameReplyLen + nbdproto.ZeroesPadLen]byte
	binary.BigEndian.PutUint64(b[0:8], ex.size)
	binary.BigEndian.PutUint16(b[8:10], uint16(ex.txFlagsFor(h.structured)))
	n := len(b)
	if h.noZeroes {
		n = nbdproto.ExportNameReplyLen
	}
	h.w.Write(b[:n])
	h.ex = ex
	return h.w.Flush()
}

// list answers NBD_OPT_LIST with one NBD_REP_SERVER per export.
func (h *haggler) list(data []byte) error {
	if len(data) != 0 {
		return h.reply(nbdproto.OptList, nbdproto.RepErrInvalid, "NBD_OPT_LIST takes no data")
	}
	for _, ex := range h.cat.list() {
		p := make([]byte, 4, 4+len(ex.Name)+len(ex.Description))
		binary.BigEndian.PutUint32(p, uint32(len(ex.Name)))
		p = append(append(p, ex.Name...), ex.Description...)
		h.send(nbdproto.OptList, nbdproto.RepServer, p)
	}
	return h.reply(nbdproto.OptList, nbdproto.RepAck, "")
}

// info answers NBD_OPT_INFO and NBD_OPT_GO, whose data is
//
//	name length (32) | name | number of info requests (16) | info types (16 each)
//
// with NBD_INFO_EXPORT, whichever of NAME, DESCRIPTION and BLOCK_SIZE were
// asked for, and NBD_REP_ACK. After the ACK to NBD_OPT_GO transmission
// begins.
func (h *haggler) info(opt nbdproto.Option, data []byte) (done bool, err error) {
	if len(data) < 6 {
		return false, h.reply(opt, nbdproto.RepErrInvalid, "option data shorter than 6 bytes")
	}
	nameLen := uint64(binary.BigEndian.Uint32(data[0:4]))
	if nameLen > uint64(len(data)-6) {
		return false, h.reply(opt, nbdproto.RepErrInvalid, "name length exceeds option data")
	}
	name := string(data[4 : 4+nameLen])
	reqs := data[4+nameLen:]
	nreq := int(binary.BigEndian.Uint16(reqs[0:2]))
	if len(reqs) != 2+2*nreq {
		return false, h.reply(opt, nbdproto.RepErrInvalid, "information request count does not match option length")
	}
	ex := h.cat.lookup(name)
	if ex == nil || (opt == nbdproto.OptGo && !h.cat.attach(ex)) {
		return false, h.reply(opt, nbdproto.RepErrUnknown, fmt.Sprintf("no export %q", name))
	}

	var b [14]byte
	binary.BigEndian.PutUint16(b[0:2], uint16(nbdproto.InfoExport))
	binary.BigEndian.PutUint64(b[2:10], ex.size)
	binary.BigEndian.PutUint16(b[10:12], uint16(ex.txFlagsFor(h.structured)))
	h.send(opt, nbdproto.RepInfo, b[:12])
	var sent [nbdproto.InfoBlockSize + 1]bool
	for i := range nreq {
		t := nbdproto.InfoType(binary.BigEndian.Uint16(reqs[2+2*i:]))
		if t > nbdproto.InfoBlockSize || sent[t] {
			continue // unknown types are ignored, as the spec requires
		}
		sent[t] = true
		switch t {
		case nbdproto.InfoName:
			h.send(opt, nbdproto.RepInfo, append(binary.BigEndian.AppendUint16(nil, uint16(nbdproto.InfoName)), ex.Name...))
		case nbdproto.InfoDescription:
			if ex.Description != "" {
				h.send(opt, nbdproto.RepInfo, append(binary.BigEndian.AppendUint16(nil, uint16(nbdproto.InfoDescription)), ex.Description...))
			}
		case nbdproto.InfoBlockSize:
			binary.BigEndian.PutUint16(b[0:2], uint16(nbdproto.InfoBlockSize))
			binary.BigEndian.PutUint32(b[2:6], ex.minBlock)
			binary.BigEndian.PutUint32(b[6:10], ex.prefs)
			binary.BigEndian.PutUint32(b[10:14], maxPayloadBytes)
			h.send(opt, nbdproto.RepInfo, b[:14])
		}
	}
	if err := h.reply(opt, nbdproto.RepAck, ""); err != nil {
		return false, err
	}
	if opt == nbdproto.OptGo {
		h.ex = ex
		return true, nil
	}
	return false, nil
}

// send buffers one option reply.
func (h *haggler) send(opt nbdproto.Option, typ nbdproto.RepType, data []byte) {
	var b [nbdproto.OptionReplyLen]byte
	nbdproto.PutOptionReply(b[:], nbdproto.OptionReplyHeader{Option: opt, Type: typ, Length: uint32(len(data))})
	h.w.Write(b[:])
	h.w.Write(data)
}

// reply sends the final reply to an option, with an optional message for
// error replies, and flushes everything buffered.
func (h *haggler) reply(opt nbdproto.Option, typ nbdproto.RepType, msg string) error {
	h.send(opt, typ, []byte(msg))
	return h.w.Flush()
}
