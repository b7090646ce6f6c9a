package jsonrpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"sync/atomic"
	"testing"
)

// streamSeeds are request streams as clients send them; they run as plain
// tests too.
var streamSeeds = []string{
	"{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"sum\",\n  \"id\": 1,\n  \"params\": {\n    \"a\": 1\n  }\n}",
	`{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":1}}{"jsonrpc":"2.0","method":"echo","id":"x","params":[1]}`,
	`[{"jsonrpc":"2.0","method":"count"},{"jsonrpc":"2.0","method":"sum","id":2,"params":{"a":1,"b":2}},7]`,
	`[]`,
	`[{"jsonrpc":"2.0","method":"count"}]`,
	`{"jsonrpc":"2.0","method":"count"}`,
	`{"jsonrpc":"2.0","method":"panic","id":null}`,
	`{"jsonrpc":"1.0","method":"sum","id":1}`,
	`{"jsonrpc":"2.0","method":"sum","id":{}}`,
	`{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":1}`,
	`{"jsonrpc":"2.0","method":"sum","id":1}xyz`,
	`42 "str" true null`,
	`{"method":"text","id":1e400}`,
	`{"method":"fail_errno","id":-1,"params":{"errno":19}} {"method":"startup_only","id":2}`,
	"\xff\xfe{",
	`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`,
}

// FuzzDecodeStream feeds arbitrary bytes to a connection's request loop. It
// must never panic or hang, every reply must be a well-formed JSON-RPC reply
// on its own line, a parse error must be the last thing said, and a request
// object carrying an "id" must be answered.
func FuzzDecodeStream(f *testing.F) {
	for _, s := range streamSeeds {
		f.Add([]byte(s))
	}
	s := NewServer(Options{InitialState: StateRuntime, MaxRequestBytes: 1 << 16})
	registerFakeMethods(s, new(atomic.Int64))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		err := s.serveStream(context.Background(), bytes.NewReader(in), &out)

		var lines [][]byte
		sc := bufio.NewScanner(&out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines = append(lines, append([]byte(nil), sc.Bytes()...))
		}
		if out.Len() > 0 && out.Bytes()[out.Len()-1] != '\n' {
			t.Fatalf("output does not end in a newline: %q", out.Bytes())
		}
		var last reply
		for _, l := range lines {
			last = checkReplyLine(t, l)
		}
		if err != nil {
			if len(lines) == 0 || last.Error == nil || last.Error.Code != CodeParseError {
				t.Fatalf("stream ended with %v but the last reply is %+v", err, last)
			}
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(in, &obj) == nil {
			if _, hasID := obj["id"]; hasID && len(lines) == 0 {
				t.Fatalf("request with an id got no reply: %q", in)
			}
		}
	})
}

// checkReplyLine checks one output line and returns its last reply object.
func checkReplyLine(t *testing.T, line []byte) reply {
	t.Helper()
	var batch []json.RawMessage
	objs := []json.RawMessage{line}
	if kindOf(line) == kindArray {
		if err := json.Unmarshal(line, &batch); err != nil || len(batch) == 0 {
			t.Fatalf("bad batch reply %q: %v", line, err)
		}
		objs = batch
	}
	var r reply
	for _, o := range objs {
		var members map[string]json.RawMessage
		if err := json.Unmarshal(o, &members); err != nil {
			t.Fatalf("reply %q is not an object: %v", o, err)
		}
		if _, ok := members["id"]; !ok {
			t.Fatalf("reply %q has no id", o)
		}
		r = reply{}
		if err := json.Unmarshal(o, &r); err != nil || r.JSONRPC != "2.0" {
			t.Fatalf("bad reply %q: %v", o, err)
		}
		if (r.Error == nil) == (r.Result == nil) {
			t.Fatalf("reply %q: want exactly one of result and error", o)
		}
		if r.Error != nil && r.Error.Message == "" {
			t.Fatalf("reply %q: empty error message", o)
		}
	}
	return r
}

// FuzzDecodeParams decodes arbitrary params into a struct of every kind. It
// must never panic; a failure must be the caller's *Error; a success must
// mean that every member was known and every required one present.
func FuzzDecodeParams(f *testing.F) {
	for _, s := range []string{
		`{"name":"n","mode":"wt"}`,
		`{"name":"n","mode":"wt","cache_line_size":1e1,"inner":{"uuid":"u","size":1.0}}`,
		`{"name":"n","mode":"wt","tags":["a"],"labels":{"a":-1},"raw":[null],"anything":{"x":[]}}`,
		`{"name":"n","mode":"wt","pair":[1,2,3]}`,
		`{"name":"n","name":"m","mode":"wt"}`,
		`{"name":null}`,
		`[1,2]`,
		`null`,
		``,
		`{"name":"n","mode":"wt","delta":-2147483648.000e0}`,
	} {
		f.Add([]byte(s))
	}
	known := map[string]bool{}
	for _, fi := range structInfoFor(reflectTypeOf[allKinds]()).fields {
		known[fi.name] = true
	}
	onErr := &Error{Code: -7, Message: "decode failed"}
	f.Fuzz(func(t *testing.T, in []byte) {
		var p allKinds
		err := DecodeParams(in, &p, onErr)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != -7 || e.Message != "decode failed" || e.Data == "" {
				t.Fatalf("error %v is not the caller's error with a reason", err)
			}
			return
		}
		if len(bytes.TrimSpace(in)) == 0 || string(bytes.TrimSpace(in)) == "null" {
			t.Fatalf("absent params decoded although name and mode are required")
		}
		var members map[string]json.RawMessage
		if err := json.Unmarshal(in, &members); err != nil {
			t.Fatalf("accepted params that are not an object: %q", in)
		}
		for k := range members {
			if !known[k] {
				t.Fatalf("accepted unknown member %q", k)
			}
		}
		if _, ok := members["name"]; !ok || p.Name == "" && string(members["name"]) != `""` {
			t.Fatalf("accepted without name: %q", in)
		}
		if _, ok := members["mode"]; !ok {
			t.Fatalf("accepted without mode: %q", in)
		}
	})
}

func reflectTypeOf[T any]() reflect.Type { return reflect.TypeFor[T]() }
