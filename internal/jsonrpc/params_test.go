package jsonrpc

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

type inner struct {
	UUID string `json:"uuid" rpc:"required"`
	Size uint32 `json:"size"`
}

type Common struct {
	Name string `json:"name" rpc:"required"`
}

type allKinds struct {
	Common                      // flattened: "name"
	Mode        string          `json:"mode" rpc:"required"`
	LineSizeKiB uint64          `json:"cache_line_size"`
	Threshold   uint32          `json:"threshold"`
	Delta       int32           `json:"delta"`
	Readonly    bool            `json:"readonly"`
	Ratio       float64         `json:"ratio"`
	Optional    *string         `json:"optional"`
	Tags        []string        `json:"tags"`
	Inner       *inner          `json:"inner"`
	Inners      []inner         `json:"inners"`
	Labels      map[string]int  `json:"labels"`
	Raw         json.RawMessage `json:"raw"`
	Anything    any             `json:"anything"`
	Ignored     string          `json:"-"`
	Untagged    int             // matched by the exact field name
	//lint:ignore U1000 present to check that DecodeParams skips it
	unexported int
	Small      uint8             `json:"small"`
	Pair       [2]int            `json:"pair"`
	Extras     map[string]string `json:"extras"`
}

func TestDecodeParamsAccepts(t *testing.T) {
	var p allKinds
	p.LineSizeKiB = 4 // a default that an absent member leaves alone
	err := DecodeParams(json.RawMessage(`{
		"name": "Cache0", "mode": "wt", "threshold": 1e3, "delta": -2147483648,
		"readonly": false, "ratio": 0.5, "optional": "x", "tags": ["a","b"],
		"inner": {"uuid": "u1", "size": 1.0}, "inners": [{"uuid":"u2"}],
		"labels": {"a": 1}, "raw": {"k": [1, null]}, "anything": null,
		"Untagged": 7, "small": 255, "pair": [1, 2], "extras": {}
	}`), &p, nil)
	if err != nil {
		t.Fatal(err)
	}
	opt := "x"
	want := allKinds{
		Common: Common{Name: "Cache0"}, Mode: "wt", LineSizeKiB: 4, Threshold: 1000,
		Delta: -2147483648, Ratio: 0.5, Optional: &opt, Tags: []string{"a", "b"},
		Inner: &inner{UUID: "u1", Size: 1}, Inners: []inner{{UUID: "u2"}},
		Labels: map[string]int{"a": 1}, Raw: json.RawMessage(`{"k": [1, null]}`),
		Untagged: 7, Small: 255, Pair: [2]int{1, 2}, Extras: map[string]string{},
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v", p, want)
	}
}

func TestDecodeParamsRejects(t *testing.T) {
	base := `"name":"n","mode":"wt"`
	for params, reason := range map[string]string{
		`{"mode":"wt"}`:                                         `parameter "name": missing required parameter`,
		`{"name":"n"}`:                                          `parameter "mode": missing required parameter`,
		`{` + base + `,"bogus":1}`:                              `parameter "bogus": unknown parameter`,
		`{` + base + `,"Mode":"wt"}`:                            `parameter "Mode": unknown parameter`,
		`{` + base + `,"untagged":1}`:                           `parameter "untagged": unknown parameter`,
		`{` + base + `,"Ignored":"x"}`:                          `parameter "Ignored": unknown parameter`,
		`{` + base + `,"unexported":1}`:                         `parameter "unexported": unknown parameter`,
		`{` + base + `,"name":"again"}`:                         `parameter "name": given twice`,
		`{"name":1,"mode":"wt"}`:                                `parameter "name": expected string, got number`,
		`{"name":null,"mode":"wt"}`:                             `parameter "name": expected string, got null`,
		`{"name":"a\u0000b","mode":"wt"}`:                       `parameter "name": string contains a NUL character`,
		`{` + base + `,"optional":null}`:                        `parameter "optional": expected string, got null`,
		`{` + base + `,"cache_line_size":"4"}`:                  `parameter "cache_line_size": expected unsigned integer, got string`,
		`{` + base + `,"cache_line_size":-1}`:                   `parameter "cache_line_size": -1 is not a uint64`,
		`{` + base + `,"cache_line_size":-0}`:                   `parameter "cache_line_size": -0 is not a uint64`,
		`{` + base + `,"cache_line_size":4.5}`:                  `parameter "cache_line_size": 4.5 is not a uint64`,
		`{` + base + `,"cache_line_size":0.0}`:                  `parameter "cache_line_size": 0.0 is not a uint64`,
		`{` + base + `,"threshold":4294967296}`:                 `parameter "threshold": 4294967296 is not a uint32`,
		`{` + base + `,"small":256}`:                            `parameter "small": 256 is not a uint8`,
		`{` + base + `,"delta":2147483648}`:                     `parameter "delta": 2147483648 is not an int32`,
		`{` + base + `,"delta":-2147483649}`:                    `parameter "delta": -2147483649 is not an int32`,
		`{` + base + `,"cache_line_size":1e30}`:                 `parameter "cache_line_size": 1e30 is not a uint64`,
		`{` + base + `,"cache_line_size":99999999999999999999}`: `parameter "cache_line_size": 99999999999999999999 out of range`,
		`{` + base + `,"readonly":0}`:                           `parameter "readonly": expected boolean, got number`,
		`{` + base + `,"readonly":"true"}`:                      `parameter "readonly": expected boolean, got string`,
		`{` + base + `,"tags":"a"}`:                             `parameter "tags": expected array, got string`,
		`{` + base + `,"tags":["a",2]}`:                         `parameter "tags[1]": expected string, got number`,
		`{` + base + `,"inner":{}}`:                             `parameter "inner.uuid": missing required parameter`,
		`{` + base + `,"inner":{"uuid":"u","x":1}}`:             `parameter "inner.x": unknown parameter`,
		`{` + base + `,"inners":[{"uuid":"u"},{"UUID":"u"}]}`:   `parameter "inners[1].UUID": unknown parameter`,
		`{` + base + `,"labels":{"a":1,"a":2}}`:                 `parameter "labels.a": given twice`,
		`{` + base + `,"labels":{"a":"1"}}`:                     `parameter "labels.a": expected integer, got string`,
		`{` + base + `,"pair":[1,2,3]}`:                         `parameter "pair": more than 2 elements`,
		`{` + base + `,"ratio":1e999}`:                          `parameter "ratio": 1e999 out of range for float64`,
		`[]`:                                                    `params: expected object, got array`,
		`"x"`:                                                   `params: expected object, got string`,
		`{"name":`:                                              `params are not valid JSON`,
	} {
		var p allKinds
		err := DecodeParams(json.RawMessage(params), &p, &Error{Code: CodeInternalError, Message: MsgDecodeFailed})
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: got %v, want an *Error", params, err)
			continue
		}
		if e.Code != CodeInternalError || e.Message != MsgDecodeFailed {
			t.Errorf("%s: got %d %q, want the caller's code and message", params, e.Code, e.Message)
		}
		if e.Data != reason {
			t.Errorf("%s:\n got reason %q\nwant reason %q", params, e.Data, reason)
		}
	}
}

func TestDecodeParamsAbsent(t *testing.T) {
	var none struct {
		Current bool `json:"current"`
	}
	for _, p := range []json.RawMessage{nil, json.RawMessage("null"), json.RawMessage(" {} ")} {
		if err := DecodeParams(p, &none, nil); err != nil {
			t.Errorf("params %q: %v", p, err)
		}
	}
	var req struct {
		Name string `json:"name" rpc:"required"`
	}
	err := DecodeParams(nil, &req, nil)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeInvalidParams || e.Message != MsgInvalidParams {
		t.Fatalf("absent params with a required member: %v", err)
	}
}

func TestDecodeParamsBadDestination(t *testing.T) {
	var s struct{}
	for _, dst := range []any{s, nil, (*struct{})(nil)} {
		err := DecodeParams(json.RawMessage(`{}`), dst, nil)
		if err == nil || errors.As(err, new(*Error)) {
			t.Errorf("dst %T: %v, want a plain (internal) error", dst, err)
		}
	}
	// Untagged, so that vet's tag check does not object.
	type A struct{ X string }
	type B struct{ X string }
	type clash struct {
		A
		B
	}
	err := DecodeParams(json.RawMessage(`{"X":"1"}`), &clash{}, nil)
	if err == nil || !strings.Contains(err.Error(), `more than one field named "X"`) {
		t.Errorf("clashing fields: %v", err)
	}
}

func TestSplitNumberMatchesSPDK(t *testing.T) {
	for lit, want := range map[string]uint64{
		"0": 0, "10": 10, "1.0": 1, "1.000": 1, "1e3": 1000, "1E+3": 1000, "25e-1": 0, "100e-2": 1,
		"18446744073709551615": 1<<64 - 1,
	} {
		got, err := numberToUint(lit, 64)
		if lit == "25e-1" {
			if err == nil {
				t.Errorf("%s: accepted as %d", lit, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%s: got %d, %v; want %d", lit, got, err, want)
		}
	}
	for lit, want := range map[string]int64{
		"-0": 0, "-1": -1, "-9223372036854775808": -1 << 63, "9223372036854775807": 1<<63 - 1, "-1.0e1": -10,
	} {
		if got, err := numberToInt(lit, 64); err != nil || got != want {
			t.Errorf("%s: got %d, %v; want %d", lit, got, err, want)
		}
	}
	if _, err := numberToInt("9223372036854775808", 64); err == nil {
		t.Error("int64 overflow accepted")
	}
}
