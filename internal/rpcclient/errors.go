package rpcclient

import (
	"encoding/json"
	"strconv"
	"strings"

	"blockcache/internal/jsonrpc"
	"blockcache/internal/jsonrpc/jsontext"
)

// ResponseError is an error reply from the server. errors.As finds the
// *jsonrpc.Error (code, message, data) through it.
type ResponseError struct {
	Method string
	ID     int64
	// Params are the params sent, nil if none.
	Params json.RawMessage
	// Err is the "error" member of the reply.
	Err *jsonrpc.Error
	// raw is the "error" member as received, for Error().
	raw json.RawMessage
}

func newResponseError(method string, id int64, params, raw json.RawMessage) *ResponseError {
	e := &ResponseError{Method: method, ID: id, Params: params, raw: raw, Err: &jsonrpc.Error{}}
	if json.Unmarshal(raw, e.Err) != nil {
		// Not an object with code and message; keep the text at least.
		e.Err = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: string(raw)}
	}
	return e
}

// Error is word for word what rpc.py prints for an error reply:
//
//	request:
//	{
//	  "name": "Cache0",
//	  "method": "bdev_ocf_delete",
//	  "req_id": 3
//	}
//	Got JSON-RPC error response
//	response:
//	{
//	  "code": -32602,
//	  "message": "No such device"
//	}
func (e *ResponseError) Error() string {
	// rpc.py adds "method" and "req_id" to the params dict (replacing
	// same-named keys in place) and dumps it with indent=2.
	var ms []member
	if e.Params != nil && e.Params[0] == '{' {
		ms, _ = members(e.Params)
	}
	method := jsontext.AppendString(nil, e.Method, jsontext.Python)
	id := []byte(strconv.FormatInt(e.ID, 10))
	ms = setMember(ms, "method", method)
	ms = setMember(ms, "req_id", id)
	req, err := jsontext.Indent(object(ms), jsontext.Python, 2)
	if err != nil {
		req = object(ms)
	}
	resp, err := jsontext.Indent(e.raw, jsontext.Python, 2)
	if err != nil {
		resp = e.raw
	}
	return strings.Join([]string{"request:", string(req), "Got JSON-RPC error response", "response:", string(resp)}, "\n")
}

// Unwrap returns the *jsonrpc.Error.
func (e *ResponseError) Unwrap() error { return e.Err }

// setMember sets key to val, in place if present, else at the end, as
// assigning to a Python dict does.
func setMember(ms []member, key string, val json.RawMessage) []member {
	for i := range ms {
		if ms[i].key == key {
			ms[i].val = val
			return ms
		}
	}
	return append(ms, member{key, val})
}
