package jsonrpc

import (
	"context"
	"encoding/json"
)

// Call runs a method in-process, as if a client had sent it: the same
// lookup, state check, panic recovery and error mapping. A failure is
// returned as an *Error. The daemon replays JSON config files with it.
func (s *Server) Call(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	if len(params) == 0 {
		params = nil
	}
	res, rerr := s.call(ctx, request{method: method, params: params})
	if rerr != nil {
		return nil, rerr
	}
	return res, nil
}
