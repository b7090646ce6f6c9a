package rpcclient

import (
	"encoding/json"
	"fmt"
	"strconv"

	"blockcache/internal/jsonrpc"
	"blockcache/internal/jsonrpc/jsontext"
)

// BatchCall is one call of a batch.
type BatchCall struct {
	Method string
	Params any // as for Call
	// Notify sends the call without an id: the server runs it and does not
	// answer.
	Notify bool
}

// BatchResult is the answer to one call of a batch that was not a
// notification: exactly one of Result and Err is set.
type BatchResult struct {
	ID     int64
	Result json.RawMessage
	Err    *jsonrpc.Error
}

// CallBatch sends calls as one JSON-RPC 2.0 batch (a JSON array, indented
// like rpc.py's requests) and returns the results of the calls that are not
// notifications, in call order. blockcache answers batches; SPDK does not
// (it replies with one -32600 error, which CallBatch returns as an error
// wrapping the *jsonrpc.Error).
func (c *Client) CallBatch(calls []BatchCall) ([]BatchResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return nil, fmt.Errorf("batch: connection unusable: %w", c.broken)
	}
	body := []byte{'['}
	var ids []int64
	for i, call := range calls {
		p, err := normalizeParams(call.Params, true)
		if err != nil {
			return nil, fmt.Errorf("batch call %d (%s): %w", i, call.Method, err)
		}
		var obj []byte
		if call.Notify {
			obj = []byte(`{"jsonrpc":"2.0","method":`)
			obj = jsontext.AppendString(obj, call.Method, jsontext.Python)
			if p != nil {
				obj = append(append(obj, `,"params":`...), p...)
			}
			obj = append(obj, '}')
		} else {
			c.lastID++
			ids = append(ids, c.lastID)
			if obj, err = compactRequest(c.lastID, call.Method, p); err != nil {
				return nil, err
			}
		}
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, obj...)
	}
	body = append(body, ']')
	req, err := jsontext.Indent(body, jsontext.Python, 2)
	if err != nil {
		return nil, err
	}
	if err := c.send(req); err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	if len(ids) == 0 && len(calls) > 0 {
		return nil, nil // only notifications: no reply is coming
	}
	raw, err := c.recv()
	if err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}

	var replies []reply
	if err := json.Unmarshal(raw, &replies); err != nil {
		// A single object: the server rejected the batch as a whole.
		var r reply
		if json.Unmarshal(raw, &r) == nil && r.Error != nil {
			return nil, fmt.Errorf("batch rejected: %w", newResponseError("batch", 0, nil, r.Error).Err)
		}
		return nil, c.fail(fmt.Errorf("batch: malformed reply: %.200s", raw))
	}
	byID := map[string]reply{}
	for _, r := range replies {
		byID[string(r.ID)] = r
	}
	results := make([]BatchResult, 0, len(ids))
	for _, id := range ids {
		r, ok := byID[strconv.FormatInt(id, 10)]
		if !ok {
			return nil, fmt.Errorf("batch: no reply for request id %d in %.200s", id, raw)
		}
		res := BatchResult{ID: id, Result: r.Result}
		if r.Error != nil {
			res.Result = nil
			res.Err = newResponseError("", id, nil, r.Error).Err
		} else if r.Result == nil {
			return nil, fmt.Errorf("batch: reply for id %d has neither result nor error", id)
		}
		results = append(results, res)
	}
	return results, nil
}
