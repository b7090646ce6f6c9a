package main

import (
	"encoding/json"
	"strings"
	"testing"

	"blockcache/internal/rpcclient"
)

func TestRPCPrintsResultsLikeRPCPy(t *testing.T) {
	d := startDaemon(t)
	// A string result is printed bare.
	d.malloc(t, "M0", 8192, 512)

	// Any other result is JSON indented by 2, as rpc.py prints it.
	got := d.ok(t, "rpc", "bdev_get_bdevs", `{"name":"M0"}`)
	want, err := rpcclient.Indent(d.call(t, "bdev_get_bdevs", map[string]string{"name": "M0"}))
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want)+"\n" {
		t.Errorf("rpc bdev_get_bdevs printed\n%s\nwant\n%s", got, want)
	}
	if !strings.HasPrefix(got, "[\n  {\n    \"name\": \"M0\",\n") {
		t.Errorf("rpc bdev_get_bdevs is not indented by 2:\n%s", got)
	}

	// No params.
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal([]byte(d.ok(t, "rpc", "spdk_get_version")), &v); err != nil || !strings.Contains(v.Version, testVersion) {
		t.Errorf("rpc spdk_get_version: version %q (%v), want it to contain %q", v.Version, err, testVersion)
	}

	// Params from stdin.
	r := runCLI(t, " {\"name\": \"M0\"}\n", "rpc", "-s", d.sock, "bdev_malloc_delete", "-")
	if r.code != 0 || r.stdout != "true\n" {
		t.Fatalf("rpc bdev_malloc_delete - : exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if res := d.call(t, "bdev_get_bdevs", nil); string(res) != "[]" {
		t.Errorf("M0 still there after bdev_malloc_delete: %s", res)
	}
}

func TestRPCBadParams(t *testing.T) {
	d := startDaemon(t)
	d.fails(t, []string{"rpc", "bdev_get_bdevs", `{"name":`}, "JSON-PARAMS is not valid JSON")
	d.fails(t, []string{"rpc", "bdev_get_bdevs", `["M0"]`}, "JSON-PARAMS must be a JSON object")
	r := runCLI(t, "", "rpc", "-s", d.sock, "bdev_get_bdevs", "-")
	checkFails(t, []string{"rpc", "bdev_get_bdevs", "-"}, r, "params on stdin is not valid JSON")
	d.fails(t, []string{"rpc"}, "accepts between 1 and 2 arg(s)")
}

func TestRPCErrorReplyPrintedLikeRPCPy(t *testing.T) {
	d := startDaemon(t)
	stderr := d.fails(t, []string{"rpc", "no_such_method"}, "Method not found")
	want := `request:
{
  "method": "no_such_method",
  "req_id": 1
}
Got JSON-RPC error response
response:
{
  "code": -32601,
  "message": "Method not found"
}
`
	if stderr != want {
		t.Errorf("stderr\n%s\nwant\n%s", stderr, want)
	}

	// With params, which rpc.py prints with the request.
	stderr = d.fails(t, []string{"rpc", "bdev_ocf_delete", `{"name":"C9"}`}, `"code": -32602`, `"message": "No such device"`)
	if !strings.HasPrefix(stderr, "request:\n{\n  \"name\": \"C9\",\n  \"method\": \"bdev_ocf_delete\",\n  \"req_id\": 1\n}\n") {
		t.Errorf("stderr does not start with the request:\n%s", stderr)
	}
}
