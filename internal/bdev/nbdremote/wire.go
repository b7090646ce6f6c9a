package nbdremote

import "blockcache/internal/nbdproto"

// The NBD protocol as this client speaks it is package nbdproto, which the
// server (internal/nbd) shares. That the two do not merely agree with each
// other is checked from outside: nbdkit_test.go runs this client against
// nbdkit, and the server's tests run libnbd, qemu and the test client
// nbdclient, a separate encoding, against the server.

// Sizes the client imposes on what a server may send it.
const (
	// maxOptionReply bounds an option reply's payload (an error message or
	// an information record).
	maxOptionReply = 64 << 10
	// maxErrorMessage bounds an error chunk's message.
	maxErrorMessage = nbdproto.MaxStringLen
)

// cmdName names a command in errors, as bdev.IOError's Op does.
func cmdName(c nbdproto.Command) string {
	switch c {
	case nbdproto.CmdRead:
		return "read"
	case nbdproto.CmdWrite:
		return "write"
	case nbdproto.CmdFlush:
		return "flush"
	case nbdproto.CmdTrim:
		return "discard"
	case nbdproto.CmdWriteZeroes:
		return "write-zeroes"
	case nbdproto.CmdDisc:
		return "disconnect"
	}
	return "command"
}
