package jsonrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"blockcache/internal/excerpt"
	"blockcache/internal/jsonrpc/jsontext"
)

// request is one validated JSON-RPC request object.
type request struct {
	method string
	params json.RawMessage // nil when absent or null
	id     json.RawMessage // nil when absent (a notification)
}

// response is one reply object. Field order is the order SPDK writes:
// jsonrpc, id, then result or error.
type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *Error          `json:"error,omitempty"`
}

var jsonNull = json.RawMessage("null")

func errorResponse(id json.RawMessage, e *Error) *response {
	if id == nil {
		id = jsonNull
	}
	return &response{JSONRPC: "2.0", ID: id, Error: e.bounded()}
}

// idBytes is the length of an id as SPDK measures it: a string's without
// its quotes, a number's literal.
func idBytes(val json.RawMessage) int {
	if kindOf(val) == kindString {
		return len(val) - 2
	}
	return len(val)
}

// parseRequest validates one request object the way SPDK's
// parse_single_request does: "method" must be a string; "jsonrpc", if
// present, must be "2.0" (SPDK accepts it absent); "id" must be a string,
// number or null of at most maxIDBytes; "params" an object, array or null;
// no other member and no member twice. On failure it returns
// CodeInvalidRequest, and req.id holds whatever valid id it read, so the
// error can still be matched to the request.
func parseRequest(raw []byte) (request, *Error) {
	var req request
	var reason string // the first problem found
	fail := func(format string, args ...any) {
		if reason == "" {
			reason = fmt.Sprintf(format, args...)
		}
	}
	seen := map[string]bool{}
	// Walk every member even after a problem, to find the id.
	err := objectMembers(raw, func(key string, val json.RawMessage) error {
		if seen[key] {
			fail("duplicate member %s", excerpt.Quote(key))
			if key == "id" {
				req.id = nil
			}
			return nil
		}
		seen[key] = true
		switch key {
		case "jsonrpc":
			var v string
			if kindOf(val) != kindString || json.Unmarshal(val, &v) != nil || v != "2.0" {
				fail(`"jsonrpc" must be "2.0"`)
			}
		case "method":
			if kindOf(val) != kindString || json.Unmarshal(val, &req.method) != nil {
				fail(`"method" must be a string`)
			}
		case "params":
			switch kindOf(val) {
			case kindNull:
			case kindObject, kindArray:
				req.params = val
			default:
				fail(`"params" must be an object or an array`)
			}
		case "id":
			switch k := kindOf(val); {
			case (k == kindString || k == kindNumber) && idBytes(val) > maxIDBytes:
				fail(`"id" of %d bytes is longer than %d`, idBytes(val), maxIDBytes)
			case k == kindString, k == kindNumber, k == kindNull:
				req.id = val
			default:
				fail(`"id" must be a string, a number or null`)
			}
		default:
			fail("unknown member %s", excerpt.Quote(key))
		}
		return nil
	})
	if err != nil {
		fail("%v", err)
	}
	if !seen["method"] {
		fail(`"method" is missing`)
	}
	if reason != "" {
		return request{id: req.id}, &Error{Code: CodeInvalidRequest, Message: MsgInvalidRequest, Data: reason}
	}
	return req, nil
}

// handleValue answers one complete JSON value read from a connection. It
// returns the encoded reply without the trailing newline, or nil when no
// reply is due (a notification, or a batch of only notifications).
func (s *Server) handleValue(ctx context.Context, raw []byte) []byte {
	switch kindOf(raw) {
	case kindObject:
		if r := s.handleRequest(ctx, raw); r != nil {
			return s.encode(r)
		}
		return nil
	case kindArray:
		var elems []json.RawMessage
		if err := json.Unmarshal(raw, &elems); err != nil {
			// raw was read by a json.Decoder, so this cannot happen.
			return s.encode(errorResponse(nil, &Error{Code: CodeParseError, Message: MsgParseError, Data: err.Error()}))
		}
		if len(elems) == 0 {
			return s.encode(errorResponse(nil, &Error{Code: CodeInvalidRequest, Message: MsgInvalidRequest, Data: "empty batch"}))
		}
		if len(elems) > maxBatch {
			return s.encode(errorResponse(nil, &Error{Code: CodeInvalidRequest, Message: MsgInvalidRequest,
				Data: fmt.Sprintf("batch of %d requests; at most %d are allowed", len(elems), maxBatch)}))
		}
		var replies []*response
		for _, e := range elems {
			if kindOf(e) != kindObject {
				replies = append(replies, errorResponse(nil, &Error{Code: CodeInvalidRequest, Message: MsgInvalidRequest, Data: "batch element is not an object"}))
				continue
			}
			if r := s.handleRequest(ctx, e); r != nil {
				replies = append(replies, r)
			}
		}
		if len(replies) == 0 {
			return nil
		}
		return s.encode(replies)
	default:
		return s.encode(errorResponse(nil, &Error{Code: CodeInvalidRequest, Message: MsgInvalidRequest, Data: "request is not an object or an array"}))
	}
}

// handleRequest runs one request object and returns its reply, or nil for a
// notification. Following JSON-RPC 2.0, a notification (no "id" member) gets
// no reply even when it fails; a request with "id": null does get one.
// (SPDK differs: it skips results for both, but sends errors for both.)
func (s *Server) handleRequest(ctx context.Context, raw []byte) *response {
	req, perr := parseRequest(raw)
	if perr != nil {
		s.log.Debug("invalid JSON-RPC request", "reason", perr.Data)
		return errorResponse(req.id, perr)
	}
	start := time.Now()
	result, err := s.call(ctx, req)
	if s.log.Enabled(ctx, slog.LevelDebug) {
		code := 0
		if err != nil {
			code = err.Code
		}
		s.log.Debug("rpc", "method", excerpt.Quote(req.method), "id", string(req.id), "code", code, "took", time.Since(start))
	}
	if req.id == nil {
		return nil
	}
	if err != nil {
		return errorResponse(req.id, err)
	}
	return &response{JSONRPC: "2.0", ID: req.id, Result: result}
}

// call looks the method up, checks the state and runs the handler, turning
// every failure into an *Error.
func (s *Server) call(ctx context.Context, req request) (result json.RawMessage, rerr *Error) {
	m, lerr := s.lookup(req.method)
	if lerr != nil {
		return nil, lerr
	}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("rpc handler panicked", "method", req.method, "panic", excerpt.Text(fmt.Sprint(p), maxErrorText), "stack", string(debug.Stack()))
			result, rerr = nil, (&Error{Code: CodeInternalError, Message: MsgInternalError, Data: fmt.Sprintf("panic: %v", p)}).bounded()
		}
	}()
	v, err := m.handler(ctx, req.params)
	if err != nil {
		return nil, toError(err)
	}
	b, err := marshal(v)
	if err != nil {
		s.log.Error("rpc result not encodable", "method", req.method, "err", err)
		return nil, &Error{Code: CodeInternalError, Message: MsgInternalError, Data: err.Error()}
	}
	return b, nil
}

// toError maps a handler's error to the error sent: an *Error anywhere in the
// chain is sent as is, anything else as CodeInternalError with its text.
// Either way message and data are bounded (see Error.bounded).
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) && e != nil {
		return e.bounded()
	}
	return (&Error{Code: CodeInternalError, Message: err.Error()}).bounded()
}

// encode marshals a reply and re-encodes it as SPDK's writer would.
func (s *Server) encode(v any) []byte {
	if s.opts.OmitErrorData {
		stripData(v)
	}
	b, err := marshal(v)
	if err == nil {
		b, err = jsontext.Compact(b, jsontext.SPDK)
	}
	if err != nil {
		// Only a handler's result can fail to encode, and call() has already
		// encoded it; a failure here is a bug.
		s.log.Error("cannot encode reply", "err", err)
		b = []byte(`{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"Internal error"}}`)
	}
	return b
}

func stripData(v any) {
	switch r := v.(type) {
	case *response:
		if r.Error != nil && r.Error.Data != "" {
			c := *r.Error
			c.Data = ""
			r.Error = &c
		}
	case []*response:
		for _, x := range r {
			stripData(x)
		}
	}
}

// marshal is json.Marshal without HTML escaping (SPDK writes '<', '>' and
// '&' verbatim).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
