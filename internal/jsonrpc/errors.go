package jsonrpc

import (
	"fmt"
	"strconv"
	"syscall"

	"blockcache/internal/excerpt"
)

// JSON-RPC 2.0 error codes, and SPDK's -32604 for a method called in the
// wrong framework state (SPDK_JSONRPC_ERROR_INVALID_STATE). Besides these,
// SPDK answers many failures with code -errno; see ErrnoError.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	CodeInvalidState   = -32604
)

// Messages SPDK sends with the standard codes (lib/jsonrpc's
// jsonrpc_server_handle_error, and the decode failure text most bdev modules
// send with CodeInternalError).
const (
	MsgParseError     = "Parse error"
	MsgInvalidRequest = "Invalid request"
	MsgMethodNotFound = "Method not found"
	MsgInvalidParams  = "Invalid parameters"
	MsgInternalError  = "Internal error"
	MsgDecodeFailed   = "spdk_json_decode_object failed"
)

// Error is a JSON-RPC error object. A handler returns one (possibly wrapped)
// to choose the code and message the client sees; any other error becomes
// CodeInternalError with the error's text as message.
//
// Data is the optional "data" member: blockcache puts a precise reason there
// (for example which parameter failed to decode) that SPDK would only log.
// Clients that know SPDK's replies ignore it; rpc.py prints it along with
// code and message.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    string `json:"data,omitempty"`
}

func (e *Error) Error() string {
	if e.Data != "" {
		return fmt.Sprintf("%s (code %d): %s", e.Message, e.Code, e.Data)
	}
	return fmt.Sprintf("%s (code %d)", e.Message, e.Code)
}

// Errorf returns an Error with the given code and a formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// bounded returns e, or a copy whose message and data are cut to
// maxErrorText bytes each, keeping head and tail, so that no reply carries
// much of what a client sent whatever a handler quoted.
func (e *Error) bounded() *Error {
	if len(e.Message) <= maxErrorText && len(e.Data) <= maxErrorText {
		return e
	}
	c := *e
	c.Message = excerpt.Text(c.Message, maxErrorText)
	c.Data = excerpt.Text(c.Data, maxErrorText)
	return &c
}

// WithData returns a copy of e carrying data as its "data" member.
func (e *Error) WithData(format string, args ...any) *Error {
	c := *e
	c.Data = fmt.Sprintf(format, args...)
	return &c
}

// ErrnoError returns the error SPDK sends for a negative errno result:
// code -errno and message strerror(errno) exactly as glibc words it, for
// example ErrnoError(syscall.ENODEV) is {-19, "No such device"}.
func ErrnoError(errno syscall.Errno) *Error {
	return &Error{Code: -int(errno), Message: Strerror(errno)}
}

// Strerror returns glibc's strerror text for errno on Linux, e.g. "File
// exists" for EEXIST, or "Unknown error N" for a number glibc does not name.
func Strerror(errno syscall.Errno) string {
	// Go's Linux error table is generated from glibc's strerror with the
	// first letter lower-cased; it names unknown numbers "errno N".
	switch errno {
	case 0:
		return "Success"
	case 133: // EHWPOISON, missing from Go's table
		return "Memory page has hardware error"
	}
	s := errno.Error()
	if s == "" || s == "errno "+strconv.Itoa(int(errno)) {
		return "Unknown error " + strconv.Itoa(int(errno))
	}
	if c := s[0]; c >= 'a' && c <= 'z' {
		s = string(c-'a'+'A') + s[1:]
	}
	return s
}
