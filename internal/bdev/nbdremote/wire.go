package nbdremote

// The NBD protocol as this client speaks it (github.com/NetworkBlockDevice/nbd
// doc/proto.md). The package defines its constants itself rather than share
// the server's: a client and the server it tests against must not agree by
// construction. Every integer on the wire is big-endian.
//
// Handshake (fixed newstyle), server first:
//
//	+----------+----------+-------+
//	| NBDMAGIC | IHAVEOPT | flags |   8 + 8 + 2 bytes
//	+----------+----------+-------+
//
// then the client's 32-bit flags, then options and their replies:
//
//	option:       | IHAVEOPT (8) | option (4) | length (4) | data |
//	option reply: | 0x3e889045565a9 (8) | option (4) | type (4) | length (4) | data |
//
// Transmission:
//
//	request:          | 0x25609513 (4) | flags (2) | type (2) | cookie (8) | offset (8) | length (4) | payload |
//	simple reply:     | 0x67446698 (4) | error (4) | cookie (8) | read payload |
//	structured chunk: | 0x668e33ef (4) | flags (2) | type (2) | cookie (8) | length (4) | payload |

// Magic numbers. Wire format: never change.
const (
	magicNBD             uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicOption          uint64 = 0x49484156454f5054 // "IHAVEOPT"
	magicOldstyle        uint64 = 0x0000420281861253 // an oldstyle server's second word
	magicOptionReply     uint64 = 0x0003e889045565a9
	magicRequest         uint32 = 0x25609513
	magicSimpleReply     uint32 = 0x67446698
	magicStructuredReply uint32 = 0x668e33ef
)

// Handshake flags (server, 16 bits) and client flags (32 bits).
const (
	handshakeFixedNewstyle uint16 = 1 << 0
	handshakeNoZeroes      uint16 = 1 << 1

	clientFixedNewstyle uint32 = 1 << 0
	clientNoZeroes      uint32 = 1 << 1
)

// Option codes.
const (
	optExportName       uint32 = 1
	optAbort            uint32 = 2
	optStartTLS         uint32 = 5
	optGo               uint32 = 7
	optStructuredReply  uint32 = 8
	optReplyErrorBit    uint32 = 1 << 31
	repAck              uint32 = 1
	repInfo             uint32 = 3
	repErrUnsup         uint32 = optReplyErrorBit | 1
	repErrPolicy        uint32 = optReplyErrorBit | 2
	repErrInvalid       uint32 = optReplyErrorBit | 3
	repErrPlatform      uint32 = optReplyErrorBit | 4
	repErrTLSReqd       uint32 = optReplyErrorBit | 5
	repErrUnknown       uint32 = optReplyErrorBit | 6
	repErrShutdown      uint32 = optReplyErrorBit | 7
	repErrBlockSizeReqd uint32 = optReplyErrorBit | 8
	repErrTooBig        uint32 = optReplyErrorBit | 9
)

// Information types of NBD_REP_INFO.
const (
	infoExport    uint16 = 0
	infoBlockSize uint16 = 3
)

// Transmission flags: what the export can do.
const (
	txHasFlags        uint16 = 1 << 0
	txReadOnly        uint16 = 1 << 1
	txSendFlush       uint16 = 1 << 2
	txSendFUA         uint16 = 1 << 3
	txSendTrim        uint16 = 1 << 5
	txSendWriteZeroes uint16 = 1 << 6
	txCanMultiConn    uint16 = 1 << 8
)

// Commands and command flags.
const (
	cmdRead        uint16 = 0
	cmdWrite       uint16 = 1
	cmdDisc        uint16 = 2
	cmdFlush       uint16 = 3
	cmdTrim        uint16 = 4
	cmdWriteZeroes uint16 = 6

	cmdFlagFUA uint16 = 1 << 0
)

// Structured reply flags and chunk types.
const (
	chunkFlagDone     uint16 = 1 << 0
	chunkNone         uint16 = 0
	chunkOffsetData   uint16 = 1
	chunkOffsetHole   uint16 = 2
	chunkErrorBit     uint16 = 1 << 15
	chunkError        uint16 = chunkErrorBit | 1
	chunkErrorOffset  uint16 = chunkErrorBit | 2
	requestHeaderSize        = 28
	simpleReplySize          = 16
	chunkHeaderSize          = 20
)

// Sizes the client imposes on what a server may send it.
const (
	// maxOptionReply bounds an option reply's payload (an error message or
	// an information record).
	maxOptionReply = 64 << 10
	// maxErrorMessage bounds an error chunk's message.
	maxErrorMessage = 4096
	// defaultMaxPayload is the largest request payload when the server
	// states no maximum block size (proto.md: 32 MiB).
	defaultMaxPayload = 32 << 20
)

func cmdName(c uint16) string {
	switch c {
	case cmdRead:
		return "read"
	case cmdWrite:
		return "write"
	case cmdFlush:
		return "flush"
	case cmdTrim:
		return "discard"
	case cmdWriteZeroes:
		return "write-zeroes"
	case cmdDisc:
		return "disconnect"
	}
	return "command"
}
