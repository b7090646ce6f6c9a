package rpcclient

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

type mallocParams struct {
	NumBlocks      uint64  `json:"num_blocks"`
	BlockSize      uint32  `json:"block_size"`
	Name           *string `json:"name"`
	MdInterleave   bool    `json:"md_interleave"`
	DifIsHeadOfMd  bool    `json:"dif_is_head_of_md"`
	PhysBlockSize  *uint32 `json:"physical_block_size,omitempty"`
	OptimalIOBound int     `json:"optimal_io_boundary"`
}

// encodeCases pair params with the Python dict rpc.py would build for them.
var encodeCases = []struct {
	name   string
	method string
	params any
	python string // the params dict in Python syntax; "" for none
	want   string
}{
	{
		name: "no params", method: "bdev_wait_for_examine",
		want: "{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"bdev_wait_for_examine\",\n  \"id\": 1\n}",
	},
	{
		name: "empty params are omitted", method: "spdk_get_version", params: map[string]any{},
		want: "{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"spdk_get_version\",\n  \"id\": 1\n}",
	},
	{
		name: "only nulls are omitted", method: "bdev_ocf_get_bdevs", params: map[string]any{"name": nil},
		want: "{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"bdev_ocf_get_bdevs\",\n  \"id\": 1\n}",
	},
	{
		name: "struct order, None dropped, False and 0 kept", method: "bdev_malloc_create",
		params: mallocParams{NumBlocks: 16384, BlockSize: 512},
		python: `{"num_blocks": 16384, "block_size": 512, "name": None, "md_interleave": False, "dif_is_head_of_md": False, "optimal_io_boundary": 0}`,
		want: `{
  "jsonrpc": "2.0",
  "method": "bdev_malloc_create",
  "id": 1,
  "params": {
    "num_blocks": 16384,
    "block_size": 512,
    "md_interleave": false,
    "dif_is_head_of_md": false,
    "optimal_io_boundary": 0
  }
}`,
	},
	{
		name: "raw params keep their order; nested null, empty list and dict kept", method: "m",
		params: json.RawMessage(`{"z":1,"a":{"x":null},"n":null,"l":[],"d":{},"s":"é<>&/\u2028😀\u007f\"\\\n"}`),
		python: `{"z": 1, "a": {"x": None}, "n": None, "l": [], "d": {}, "s": "é<>&/\u2028😀\u007f\"\\\n"}`,
		want: `{
  "jsonrpc": "2.0",
  "method": "m",
  "id": 1,
  "params": {
    "z": 1,
    "a": {
      "x": null
    },
    "l": [],
    "d": {},
    "s": "\u00e9<>&/\u2028\ud83d\ude00\u007f\"\\\n"
  }
}`,
	},
	{
		name: "map keys sorted", method: "bdev_ocf_create",
		params: map[string]any{"name": "Cache0", "mode": "wt", "cache_bdev_name": "Malloc0", "core_bdev_name": "Malloc1"},
		python: `{"cache_bdev_name": "Malloc0", "core_bdev_name": "Malloc1", "mode": "wt", "name": "Cache0"}`,
		want: `{
  "jsonrpc": "2.0",
  "method": "bdev_ocf_create",
  "id": 1,
  "params": {
    "cache_bdev_name": "Malloc0",
    "core_bdev_name": "Malloc1",
    "mode": "wt",
    "name": "Cache0"
  }
}`,
	},
}

func TestEncodeRequestMatchesRPCPy(t *testing.T) {
	for _, tc := range encodeCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EncodeRequest(1, tc.method, tc.params)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// TestEncodeRequestAgainstPython builds the same requests with Python's json
// module the way client.py does (remove_null, then json.dumps(req,
// indent=2)) and compares bytes. It needs python3 (`make deps` installs it).
func TestEncodeRequestAgainstPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 not installed: run `make deps` (python3-libnbd brings it)")
	}
	for _, tc := range encodeCases {
		params := tc.python
		if params == "" {
			params = "{}"
		}
		script := `
import json, sys
params = {k: v for k, v in (` + params + `).items() if v is not None}
req = {'jsonrpc': '2.0', 'method': ` + "'" + tc.method + "'" + `, 'id': 1}
if params:
    req['params'] = params
sys.stdout.write(json.dumps(req, indent=2))
`
		out, err := exec.Command(py, "-c", script).Output()
		if err != nil {
			t.Fatalf("%s: python: %v", tc.name, err)
		}
		got, _ := EncodeRequest(1, tc.method, tc.params)
		if string(got) != string(out) {
			t.Errorf("%s:\n go     %q\n python %q", tc.name, got, out)
		}
	}
}

func TestEncodeRequestRejects(t *testing.T) {
	for _, p := range []any{"string", 5, json.RawMessage(`{"a":`), make(chan int)} {
		if _, err := EncodeRequest(1, "m", p); err == nil {
			t.Errorf("params %v accepted", p)
		}
	}
}

func TestIndentLikePython(t *testing.T) {
	got, err := Indent(json.RawMessage(`{"b":[1,{"c":"\u00E9"}],"a":[],"e":{},"f":1.50}`))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		`{`,
		`  "b": [`,
		`    1,`,
		`    {`,
		`      "c": "\u00e9"`,
		`    }`,
		`  ],`,
		`  "a": [],`,
		`  "e": {},`,
		`  "f": 1.50`,
		`}`,
	}, "\n")
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
