package nbdproto

import (
	"encoding/binary"
	"fmt"
)

// Option is an option code of the handshake phase.
type Option uint32

// Option codes.
const (
	OptExportName      Option = 1
	OptAbort           Option = 2
	OptList            Option = 3
	OptPeekExport      Option = 4 // withdrawn
	OptStartTLS        Option = 5
	OptInfo            Option = 6
	OptGo              Option = 7
	OptStructuredReply Option = 8
	OptListMetaContext Option = 9
	OptSetMetaContext  Option = 10
	OptExtendedHeaders Option = 11
)

var optionNames = map[Option]string{
	OptExportName: "NBD_OPT_EXPORT_NAME", OptAbort: "NBD_OPT_ABORT", OptList: "NBD_OPT_LIST",
	OptPeekExport: "NBD_OPT_PEEK_EXPORT", OptStartTLS: "NBD_OPT_STARTTLS", OptInfo: "NBD_OPT_INFO",
	OptGo: "NBD_OPT_GO", OptStructuredReply: "NBD_OPT_STRUCTURED_REPLY",
	OptListMetaContext: "NBD_OPT_LIST_META_CONTEXT", OptSetMetaContext: "NBD_OPT_SET_META_CONTEXT",
	OptExtendedHeaders: "NBD_OPT_EXTENDED_HEADERS",
}

func (o Option) String() string { return codeString(optionNames, o, "NBD_OPT") }

// RepType is the type of an option reply. Error types have RepFlagError set.
type RepType uint32

// Option reply types.
const (
	RepAck            RepType = 1
	RepServer         RepType = 2
	RepInfo           RepType = 3
	RepMetaContext    RepType = 4
	RepFlagError      RepType = 1 << 31
	RepErrUnsup       RepType = RepFlagError | 1
	RepErrPolicy      RepType = RepFlagError | 2
	RepErrInvalid     RepType = RepFlagError | 3
	RepErrPlatform    RepType = RepFlagError | 4
	RepErrTLSReqd     RepType = RepFlagError | 5
	RepErrUnknown     RepType = RepFlagError | 6
	RepErrShutdown    RepType = RepFlagError | 7
	RepErrBlockSize   RepType = RepFlagError | 8
	RepErrTooBig      RepType = RepFlagError | 9
	RepErrExtHdrsReqd RepType = RepFlagError | 10
)

var repTypeNames = map[RepType]string{
	RepAck: "NBD_REP_ACK", RepServer: "NBD_REP_SERVER", RepInfo: "NBD_REP_INFO",
	RepMetaContext: "NBD_REP_META_CONTEXT", RepErrUnsup: "NBD_REP_ERR_UNSUP",
	RepErrPolicy: "NBD_REP_ERR_POLICY", RepErrInvalid: "NBD_REP_ERR_INVALID",
	RepErrPlatform: "NBD_REP_ERR_PLATFORM", RepErrTLSReqd: "NBD_REP_ERR_TLS_REQD",
	RepErrUnknown: "NBD_REP_ERR_UNKNOWN", RepErrShutdown: "NBD_REP_ERR_SHUTDOWN",
	RepErrBlockSize: "NBD_REP_ERR_BLOCK_SIZE_REQD", RepErrTooBig: "NBD_REP_ERR_TOO_BIG",
	RepErrExtHdrsReqd: "NBD_REP_ERR_EXT_HEADER_REQD",
}

func (r RepType) String() string { return codeString(repTypeNames, r, "NBD_REP") }

// IsError reports whether r is an error reply.
func (r RepType) IsError() bool { return r&RepFlagError != 0 }

// InfoType is the type of an NBD_REP_INFO payload (NBD_OPT_INFO, NBD_OPT_GO).
type InfoType uint16

// Information types.
const (
	InfoExport      InfoType = 0 // size (64) and transmission flags (16)
	InfoName        InfoType = 1 // canonical export name
	InfoDescription InfoType = 2 // human-readable description
	InfoBlockSize   InfoType = 3 // minimum, preferred, maximum (32 each)
)

var infoTypeNames = map[InfoType]string{
	InfoExport: "NBD_INFO_EXPORT", InfoName: "NBD_INFO_NAME",
	InfoDescription: "NBD_INFO_DESCRIPTION", InfoBlockSize: "NBD_INFO_BLOCK_SIZE",
}

func (t InfoType) String() string { return codeString(infoTypeNames, t, "NBD_INFO") }

// Header lengths of the handshake phase.
const (
	OptionLen      = 16 // IHAVEOPT, option, length
	OptionReplyLen = 20 // MagicOptionReply, option, type, length
)

// OptionHeader is the header of an option: its code and the length of the
// data that follows.
type OptionHeader struct {
	Option Option
	Length uint32
}

// AppendOption appends an option with its data, as a client sends it.
func AppendOption(b []byte, opt Option, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, MagicOption)
	b = binary.BigEndian.AppendUint32(b, uint32(opt))
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// ParseOption decodes an option header. It fails only on a bad magic.
func ParseOption(b *[OptionLen]byte) (OptionHeader, error) {
	if m := binary.BigEndian.Uint64(b[0:8]); m != MagicOption {
		return OptionHeader{}, fmt.Errorf("option magic %#x: %w", m, ErrBadMagic)
	}
	return OptionHeader{
		Option: Option(binary.BigEndian.Uint32(b[8:12])),
		Length: binary.BigEndian.Uint32(b[12:16]),
	}, nil
}

// OptionReplyHeader is the header of an option reply: the option answered,
// the reply type and the length of the data that follows.
type OptionReplyHeader struct {
	Option Option
	Type   RepType
	Length uint32
}

// PutOptionReply encodes h into b, at least OptionReplyLen long.
func PutOptionReply(b []byte, h OptionReplyHeader) {
	binary.BigEndian.PutUint64(b[0:8], MagicOptionReply)
	binary.BigEndian.PutUint32(b[8:12], uint32(h.Option))
	binary.BigEndian.PutUint32(b[12:16], uint32(h.Type))
	binary.BigEndian.PutUint32(b[16:20], h.Length)
}

// ParseOptionReply decodes an option reply header. It fails only on a bad
// magic.
func ParseOptionReply(b *[OptionReplyLen]byte) (OptionReplyHeader, error) {
	if m := binary.BigEndian.Uint64(b[0:8]); m != MagicOptionReply {
		return OptionReplyHeader{}, fmt.Errorf("option reply magic %#x: %w", m, ErrBadMagic)
	}
	return OptionReplyHeader{
		Option: Option(binary.BigEndian.Uint32(b[8:12])),
		Type:   RepType(binary.BigEndian.Uint32(b[12:16])),
		Length: binary.BigEndian.Uint32(b[16:20]),
	}, nil
}
