// Package nbdproto is the Network Block Device wire protocol as specified
// in github.com/NetworkBlockDevice/nbd doc/proto.md: magic numbers, option,
// reply, information and command codes, flags, error values, and the
// encoding of the fixed-size headers. The server (internal/nbd) and the
// client bdev (internal/bdev/nbdremote) both speak it through this package;
// each keeps its own logic. It imports nothing of blockcache.
//
// Every integer on the wire is big-endian. The constants are wire format:
// never change them.
//
// Handshake (fixed newstyle), server first:
//
//	greeting:     | NBDMAGIC (8) | IHAVEOPT (8) | handshake flags (2) |
//	client flags: | flags (4) |
//
// then options and their replies, until the client enters transmission:
//
//	option:       | IHAVEOPT (8) | option (4) | length (4) | data |
//	option reply: | MagicOptionReply (8) | option (4) | type (4) | length (4) | data |
//
// NBD_OPT_EXPORT_NAME is answered instead with size (8), transmission flags
// (2) and, unless the client set NBD_FLAG_C_NO_ZEROES, ZeroesPadLen zeroes.
//
// Transmission:
//
//	request:          | MagicRequest (4) | flags (2) | type (2) | cookie (8) | offset (8) | length (4) | payload |
//	simple reply:     | MagicSimpleReply (4) | error (4) | cookie (8) | read payload |
//	structured chunk: | MagicStructuredReply (4) | flags (2) | type (2) | cookie (8) | length (4) | payload |
//
// An OFFSET_DATA chunk's payload is offset (8) then data; OFFSET_HOLE's is
// offset (8) and length (4); an error chunk's is error (4), message length
// (2), message, and for ERROR_OFFSET the offset (8).
package nbdproto

// Magic numbers.
const (
	MagicNBD             uint64 = 0x4e42444d41474943 // "NBDMAGIC", first word of the greeting
	MagicOption          uint64 = 0x49484156454f5054 // "IHAVEOPT", greeting and every option
	MagicOldstyle        uint64 = 0x0000420281861253 // an oldstyle server's second word
	MagicOptionReply     uint64 = 0x0003e889045565a9 // every option reply
	MagicRequest         uint32 = 0x25609513         // every transmission request
	MagicSimpleReply     uint32 = 0x67446698         // simple reply
	MagicStructuredReply uint32 = 0x668e33ef         // structured reply chunk
)

// Handshake flags, sent by the server as 16 bits after the greeting magics.
const (
	FlagFixedNewstyle uint16 = 1 << 0
	FlagNoZeroes      uint16 = 1 << 1
)

// Client flags, sent by the client as 32 bits in answer to the greeting.
const (
	FlagCFixedNewstyle uint32 = 1 << 0
	FlagCNoZeroes      uint32 = 1 << 1
)

// Sizes and limits the specification sets.
const (
	// GreetingLen is the server's greeting: two magics and the handshake
	// flags.
	GreetingLen = 18
	// ExportNameReplyLen is NBD_OPT_EXPORT_NAME's reply of size and
	// transmission flags, before the padding.
	ExportNameReplyLen = 10
	// ZeroesPadLen is the reserved padding after NBD_OPT_EXPORT_NAME's
	// reply, omitted when the client set NBD_FLAG_C_NO_ZEROES.
	ZeroesPadLen = 124
	// MaxStringLen bounds export names, descriptions and messages.
	MaxStringLen = 4096
	// DefaultMaxPayload is the largest READ or WRITE payload when the
	// server states no maximum block size (32 MiB).
	DefaultMaxPayload = 32 << 20
	// MaxMinBlockSize is the largest minimum block size a server may state.
	MaxMinBlockSize = 64 << 10
)
