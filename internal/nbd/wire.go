// Package nbd serves bdev.Devices over the Network Block Device protocol
// (fixed newstyle negotiation, simple and structured replies), as specified
// in github.com/NetworkBlockDevice/nbd doc/proto.md.
//
// The code is laid out by protocol phase, like nbdkit's server/protocol*.c:
//
//	wire.go          constants and header layouts (this file)
//	handshake.go     option haggling, up to NBD_OPT_GO / NBD_OPT_EXPORT_NAME
//	transmission.go  read a request, validate it, execute it
//	reply.go         simple and structured replies, under a write lock
//	server.go        exports, listeners, connections, Shutdown
//
// Every integer on the wire is big-endian.
package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Magic numbers. Wire format: never change.
const (
	magicNBD             uint64 = 0x4e42444d41474943 // "NBDMAGIC", first word of the greeting
	magicOption          uint64 = 0x49484156454f5054 // "IHAVEOPT", greeting and every option
	magicOptionReply     uint64 = 0x0003e889045565a9 // every option reply
	magicRequest         uint32 = 0x25609513         // every transmission request
	magicSimpleReply     uint32 = 0x67446698         // simple reply
	magicStructuredReply uint32 = 0x668e33ef         // structured reply chunk
)

// Handshake flags, sent by the server as 16 bits after the greeting magics.
const (
	flagFixedNewstyle uint16 = 1 << 0
	flagNoZeroes      uint16 = 1 << 1
)

// Client flags, sent by the client as 32 bits in answer to the greeting.
const (
	flagCFixedNewstyle uint32 = 1 << 0
	flagCNoZeroes      uint32 = 1 << 1
	clientFlagsKnown          = flagCFixedNewstyle | flagCNoZeroes
)

// txFlags are the 16 transmission flags describing an export to a client.
type txFlags uint16

// Transmission flags.
const (
	txHasFlags        txFlags = 1 << 0
	txReadOnly        txFlags = 1 << 1
	txSendFlush       txFlags = 1 << 2
	txSendFUA         txFlags = 1 << 3
	txRotational      txFlags = 1 << 4
	txSendTrim        txFlags = 1 << 5
	txSendWriteZeroes txFlags = 1 << 6
	txSendDF          txFlags = 1 << 7
	txCanMultiConn    txFlags = 1 << 8
	txSendResize      txFlags = 1 << 9
	txSendCache       txFlags = 1 << 10
	txSendFastZero    txFlags = 1 << 11
)

var txFlagNames = [...]string{
	"HAS_FLAGS", "READ_ONLY", "SEND_FLUSH", "SEND_FUA", "ROTATIONAL", "SEND_TRIM",
	"SEND_WRITE_ZEROES", "SEND_DF", "CAN_MULTI_CONN", "SEND_RESIZE", "SEND_CACHE",
	"SEND_FAST_ZERO",
}

func (f txFlags) String() string { return flagString(uint64(f), txFlagNames[:]) }

// option is an option code of the handshake phase.
type option uint32

// Option codes.
const (
	optExportName      option = 1
	optAbort           option = 2
	optList            option = 3
	optPeekExport      option = 4 // withdrawn
	optStartTLS        option = 5
	optInfo            option = 6
	optGo              option = 7
	optStructuredReply option = 8
	optListMetaContext option = 9
	optSetMetaContext  option = 10
	optExtendedHeaders option = 11
)

var optionNames = map[option]string{
	optExportName: "NBD_OPT_EXPORT_NAME", optAbort: "NBD_OPT_ABORT", optList: "NBD_OPT_LIST",
	optPeekExport: "NBD_OPT_PEEK_EXPORT", optStartTLS: "NBD_OPT_STARTTLS", optInfo: "NBD_OPT_INFO",
	optGo: "NBD_OPT_GO", optStructuredReply: "NBD_OPT_STRUCTURED_REPLY",
	optListMetaContext: "NBD_OPT_LIST_META_CONTEXT", optSetMetaContext: "NBD_OPT_SET_META_CONTEXT",
	optExtendedHeaders: "NBD_OPT_EXTENDED_HEADERS",
}

func (o option) String() string { return codeString(optionNames, o, "NBD_OPT") }

// repType is the type of an option reply. Error types have bit 31 set.
type repType uint32

// Option reply types.
const (
	repAck            repType = 1
	repServer         repType = 2
	repInfo           repType = 3
	repMetaContext    repType = 4
	repFlagError      repType = 1 << 31
	repErrUnsup       repType = repFlagError | 1
	repErrPolicy      repType = repFlagError | 2
	repErrInvalid     repType = repFlagError | 3
	repErrPlatform    repType = repFlagError | 4
	repErrTLSReqd     repType = repFlagError | 5
	repErrUnknown     repType = repFlagError | 6
	repErrShutdown    repType = repFlagError | 7
	repErrBlockSize   repType = repFlagError | 8
	repErrTooBig      repType = repFlagError | 9
	repErrExtHdrsReqd repType = repFlagError | 10
)

var repTypeNames = map[repType]string{
	repAck: "NBD_REP_ACK", repServer: "NBD_REP_SERVER", repInfo: "NBD_REP_INFO",
	repMetaContext: "NBD_REP_META_CONTEXT", repErrUnsup: "NBD_REP_ERR_UNSUP",
	repErrPolicy: "NBD_REP_ERR_POLICY", repErrInvalid: "NBD_REP_ERR_INVALID",
	repErrPlatform: "NBD_REP_ERR_PLATFORM", repErrTLSReqd: "NBD_REP_ERR_TLS_REQD",
	repErrUnknown: "NBD_REP_ERR_UNKNOWN", repErrShutdown: "NBD_REP_ERR_SHUTDOWN",
	repErrBlockSize: "NBD_REP_ERR_BLOCK_SIZE_REQD", repErrTooBig: "NBD_REP_ERR_TOO_BIG",
	repErrExtHdrsReqd: "NBD_REP_ERR_EXT_HEADER_REQD",
}

func (r repType) String() string { return codeString(repTypeNames, r, "NBD_REP") }

// infoType is the type of an NBD_REP_INFO payload (NBD_OPT_INFO, NBD_OPT_GO).
type infoType uint16

// Information types.
const (
	infoExport      infoType = 0 // size (64) and transmission flags (16)
	infoName        infoType = 1 // canonical export name
	infoDescription infoType = 2 // human-readable description
	infoBlockSize   infoType = 3 // minimum, preferred, maximum (32 each)
)

var infoTypeNames = map[infoType]string{
	infoExport: "NBD_INFO_EXPORT", infoName: "NBD_INFO_NAME",
	infoDescription: "NBD_INFO_DESCRIPTION", infoBlockSize: "NBD_INFO_BLOCK_SIZE",
}

func (t infoType) String() string { return codeString(infoTypeNames, t, "NBD_INFO") }

// command is the type of a transmission request.
type command uint16

// Commands.
const (
	cmdRead        command = 0
	cmdWrite       command = 1
	cmdDisc        command = 2
	cmdFlush       command = 3
	cmdTrim        command = 4
	cmdCache       command = 5
	cmdWriteZeroes command = 6
	cmdBlockStatus command = 7
	cmdResize      command = 8
)

var commandNames = map[command]string{
	cmdRead: "NBD_CMD_READ", cmdWrite: "NBD_CMD_WRITE", cmdDisc: "NBD_CMD_DISC",
	cmdFlush: "NBD_CMD_FLUSH", cmdTrim: "NBD_CMD_TRIM", cmdCache: "NBD_CMD_CACHE",
	cmdWriteZeroes: "NBD_CMD_WRITE_ZEROES", cmdBlockStatus: "NBD_CMD_BLOCK_STATUS",
	cmdResize: "NBD_CMD_RESIZE",
}

func (c command) String() string { return codeString(commandNames, c, "NBD_CMD") }

// cmdFlags are the 16 command flags of a request.
type cmdFlags uint16

// Command flags.
const (
	cmdFlagFUA      cmdFlags = 1 << 0
	cmdFlagNoHole   cmdFlags = 1 << 1
	cmdFlagDF       cmdFlags = 1 << 2
	cmdFlagReqOne   cmdFlags = 1 << 3
	cmdFlagFastZero cmdFlags = 1 << 4
)

var cmdFlagNames = [...]string{"FUA", "NO_HOLE", "DF", "REQ_ONE", "FAST_ZERO"}

func (f cmdFlags) String() string { return flagString(uint64(f), cmdFlagNames[:]) }

// Structured reply flags and chunk types.
const (
	replyFlagDone uint16 = 1 << 0

	replyTypeNone        uint16 = 0
	replyTypeOffsetData  uint16 = 1
	replyTypeOffsetHole  uint16 = 2
	replyTypeBlockStatus uint16 = 5
	replyTypeError       uint16 = 1<<15 | 1
	replyTypeErrorOffset uint16 = 1<<15 | 2
)

// Error values of replies. They equal the Linux errno of the same name.
const (
	nbdEPERM     uint32 = 1
	nbdEIO       uint32 = 5
	nbdENOMEM    uint32 = 12
	nbdEINVAL    uint32 = 22
	nbdENOSPC    uint32 = 28
	nbdEOVERFLOW uint32 = 75
	nbdENOTSUP   uint32 = 95
	nbdESHUTDOWN uint32 = 108
)

// Sizes and limits.
const (
	// zeroesPadLen is the reserved padding after NBD_OPT_EXPORT_NAME's reply,
	// omitted when the client set NBD_FLAG_C_NO_ZEROES.
	zeroesPadLen = 124
	// maxStringLen bounds export names, descriptions and messages.
	maxStringLen = 4096
	// maxPayloadBytes is the largest READ or WRITE payload accepted and the
	// maximum advertised in NBD_INFO_BLOCK_SIZE (the spec's default, 32 MiB).
	maxPayloadBytes = 32 << 20
	// maxMinBlockBytes is the largest minimum block size the spec allows.
	maxMinBlockBytes = 64 << 10
)

// requestHeader is a transmission request, 28 bytes on the wire:
//
//	+--------+-------+------+--------+--------+--------+
//	| magic  | flags | type | handle | offset | length |
//	|   32   |  16   |  16  |   64   |   64   |   32   |  bits
//	+--------+-------+------+--------+--------+--------+
//
// A WRITE is followed by length bytes of data.
type requestHeader struct {
	flags  cmdFlags
	typ    command
	handle uint64
	offset uint64
	length uint32
}

const requestHeaderLen = 28

// errBadMagic means the stream is out of sync; the only answer is a hard
// disconnect.
var errBadMagic = errors.New("nbd: bad request magic")

// parseRequest decodes a request header. It fails only on a bad magic;
// everything else is judged by validate.
func parseRequest(b *[requestHeaderLen]byte) (requestHeader, error) {
	if m := binary.BigEndian.Uint32(b[0:4]); m != magicRequest {
		return requestHeader{}, fmt.Errorf("%w %#08x", errBadMagic, m)
	}
	return requestHeader{
		flags:  cmdFlags(binary.BigEndian.Uint16(b[4:6])),
		typ:    command(binary.BigEndian.Uint16(b[6:8])),
		handle: binary.BigEndian.Uint64(b[8:16]),
		offset: binary.BigEndian.Uint64(b[16:24]),
		length: binary.BigEndian.Uint32(b[24:28]),
	}, nil
}

// Reply headers:
//
//	simple:     | magic 32 | error 32 | handle 64 |                              16 bytes
//	structured: | magic 32 | flags 16 | type 16 | handle 64 | length 32 |      20 bytes
//
// An OFFSET_DATA chunk's payload starts with a 64-bit offset; an ERROR
// chunk's payload is error (32), message length (16), message.
const (
	simpleReplyLen     = 16
	structuredReplyLen = 20
)

func putSimpleReply(b []byte, errno uint32, handle uint64) {
	binary.BigEndian.PutUint32(b[0:4], magicSimpleReply)
	binary.BigEndian.PutUint32(b[4:8], errno)
	binary.BigEndian.PutUint64(b[8:16], handle)
}

func putStructuredReply(b []byte, flags, typ uint16, handle uint64, length uint32) {
	binary.BigEndian.PutUint32(b[0:4], magicStructuredReply)
	binary.BigEndian.PutUint16(b[4:6], flags)
	binary.BigEndian.PutUint16(b[6:8], typ)
	binary.BigEndian.PutUint64(b[8:16], handle)
	binary.BigEndian.PutUint32(b[16:20], length)
}

// codeString names a code, or prints it in hex with the family prefix.
func codeString[K ~uint16 | ~uint32](names map[K]string, k K, family string) string {
	if s, ok := names[k]; ok {
		return s
	}
	return fmt.Sprintf("%s(%#x)", family, uint32(k))
}

// flagString names the set bits of f joined by "|", unknown bits in hex.
func flagString(f uint64, names []string) string {
	if f == 0 {
		return "0"
	}
	var parts []string
	for i, n := range names {
		if f&(1<<i) != 0 {
			parts = append(parts, n)
			f &^= 1 << i
		}
	}
	if f != 0 {
		parts = append(parts, fmt.Sprintf("%#x", f))
	}
	return strings.Join(parts, "|")
}
