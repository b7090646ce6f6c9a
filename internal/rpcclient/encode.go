package rpcclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"blockcache/internal/jsonrpc/jsontext"
)

// EncodeRequest returns the exact bytes rpc.py sends for a call:
// json.dumps({"jsonrpc": "2.0", "method": method, "id": id, "params": p},
// indent=2), with no trailing newline, where p is params with top-level null
// members removed (rpc.py's remove_null) and "params" omitted when p is
// empty. See Call for the accepted params.
func EncodeRequest(id int64, method string, params any) ([]byte, error) {
	p, err := normalizeParams(params, true)
	if err != nil {
		return nil, err
	}
	return encodeRequest(id, method, p)
}

// encodeRequest encodes a request whose params are already normalized.
func encodeRequest(id int64, method string, params json.RawMessage) ([]byte, error) {
	compact, err := compactRequest(id, method, params)
	if err != nil {
		return nil, err
	}
	return jsontext.Indent(compact, jsontext.Python, 2)
}

// compactRequest builds the request object with rpc.py's member order.
func compactRequest(id int64, method string, params json.RawMessage) ([]byte, error) {
	b := []byte(`{"jsonrpc":"2.0","method":`)
	b = jsontext.AppendString(b, method, jsontext.Python)
	b = append(b, `,"id":`...)
	b = strconv.AppendInt(b, id, 10)
	if params != nil {
		b = append(b, `,"params":`...)
		b = append(b, params...)
	}
	return append(b, '}'), nil
}

// normalizeParams turns params into the JSON rpc.py would send, or nil when
// rpc.py would omit "params" (None, or an empty dict or list). With
// dropNull, top-level members whose value is null are removed first, as
// rpc.py's remove_null does for keyword arguments; false and 0 are kept.
//
// params may be nil, a json.RawMessage (or []byte) holding JSON (empty
// means none), or any
// value encoding/json can marshal. Structs keep their field order; Go maps
// are marshalled with sorted keys.
func normalizeParams(params any, dropNull bool) (json.RawMessage, error) {
	var raw []byte
	switch p := params.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		raw = p
	case []byte:
		raw = p
	default:
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(params); err != nil {
			return nil, fmt.Errorf("encode params: %w", err)
		}
		raw = buf.Bytes()
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, nil // a nil json.RawMessage
	}
	if !json.Valid(raw) {
		return nil, fmt.Errorf("params are not valid JSON: %.80q", raw)
	}
	switch raw[0] {
	case 'n':
		return nil, nil
	case '[':
		if isEmptyArray(raw) {
			return nil, nil
		}
		return compact(raw)
	case '{':
		if dropNull {
			var err error
			if raw, err = dropNullMembers(raw); err != nil {
				return nil, err
			}
		}
		out, err := compact(raw)
		if err != nil || bytes.Equal(out, []byte("{}")) {
			return nil, err
		}
		return out, nil
	}
	return nil, fmt.Errorf("params must be a JSON object, not %.40s", raw)
}

func compact(raw []byte) (json.RawMessage, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func isEmptyArray(raw []byte) bool {
	var a []json.RawMessage
	return json.Unmarshal(raw, &a) == nil && len(a) == 0
}

// member is one member of a JSON object, in document order.
type member struct {
	key string
	val json.RawMessage
}

// members returns the members of the JSON object raw in order.
func members(raw []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %.40q", raw)
	}
	var ms []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, err
		}
		ms = append(ms, member{key, val})
	}
	return ms, nil
}

// object encodes members as a compact JSON object.
func object(ms []member) json.RawMessage {
	b := []byte{'{'}
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsontext.AppendString(b, m.key, jsontext.Python)
		b = append(b, ':')
		b = append(b, m.val...)
	}
	return append(b, '}')
}

// dropNullMembers removes the object's top-level members whose value is
// null, keeping the order of the others.
func dropNullMembers(raw []byte) (json.RawMessage, error) {
	ms, err := members(raw)
	if err != nil {
		return nil, err
	}
	kept := ms[:0]
	for _, m := range ms {
		if !bytes.Equal(bytes.TrimSpace(m.val), []byte("null")) {
			kept = append(kept, m)
		}
	}
	return object(kept), nil
}

// Indent formats a JSON value as rpc.py prints results and saves configs:
// Python's json.dumps(value, indent=2), without the trailing newline that
// print adds. Strings are re-escaped as Python does (\u00e9), and member
// order and number literals are kept.
func Indent(raw json.RawMessage) ([]byte, error) {
	return jsontext.Indent(raw, jsontext.Python, 2)
}
