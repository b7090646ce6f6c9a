package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// Every client command, with arguments that would be valid against a
// running daemon.
var clientCommands = [][]string{
	{"rpc", "spdk_get_version"},
	{"bdev", "list"},
	{"cache", "create", "C0", "--cache", "M0", "--core", "M1"},
	{"cache", "delete", "C0"},
	{"cache", "list"},
	{"cache", "stats", "C0"},
	{"cache", "set-mode", "C0", "wb"},
	{"cache", "reset-stats", "C0"},
	{"export", "start", "M0"},
	{"export", "stop", "M0"},
	{"export", "list"},
	{"config", "save"},
	{"config", "load", "-"},
	{"version", "--daemon"},
}

func TestUnreachableDaemon(t *testing.T) {
	dir, err := os.MkdirTemp("", "bc-cli-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "nobody.sock")
	for _, args := range clientCommands {
		r := runCLI(t, `{"subsystems":[]}`, append(args, "-s", sock)...)
		if args[0] == "version" {
			// It prints its own version before asking the daemon.
			if !strings.HasPrefix(r.stdout, "blockcache version ") {
				t.Errorf("version --daemon: stdout %q", r.stdout)
			}
			r.stdout = ""
		}
		checkFails(t, args, r, "blockcache: cannot reach the daemon at "+sock+": connect: no such file or directory (is `blockcache serve` running?)")
	}

	// $BLOCKCACHE_RPC_SOCKET replaces the default; -s still wins.
	t.Setenv(EnvRPCSocket, sock)
	checkFails(t, []string{"bdev", "list"}, runCLI(t, "", "bdev", "list"), "cannot reach the daemon at "+sock+":")
	d := startDaemon(t)
	t.Setenv(EnvRPCSocket, d.sock)
	if r := runCLI(t, "", "bdev", "list"); r.code != 0 || !strings.HasPrefix(r.stdout, "NAME ") {
		t.Errorf("bdev list with %s=%s: exit %d, stdout %q, stderr %q", EnvRPCSocket, d.sock, r.code, r.stdout, r.stderr)
	}
	checkFails(t, []string{"bdev", "list", "-s", sock}, runCLI(t, "", "bdev", "list", "-s", sock), "cannot reach the daemon at "+sock+":")
	if r := runCLI(t, "", "bdev", "list", "--rpc-socket", d.sock); r.code != 0 {
		t.Errorf("bdev list --rpc-socket: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestTimeoutFlag(t *testing.T) {
	d := startDaemon(t)
	checkFails(t, nil, runCLI(t, "", "bdev", "list", "-s", d.sock, "--timeout", "0s"), "--timeout must be positive")
	if r := runCLI(t, "", "bdev", "list", "-s", d.sock, "--timeout", "5s"); r.code != 0 {
		t.Errorf("--timeout 5s: exit %d, stderr %q", r.code, r.stderr)
	}

	// A server that accepts and never answers.
	dir, err := os.MkdirTemp("", "bc-cli-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "mute.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start := time.Now()
	checkFails(t, nil, runCLI(t, "", "rpc", "spdk_get_version", "-s", sock, "--timeout", "300ms"), "timeout while waiting for response (300ms)")
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("--timeout 300ms took %v", el)
	}
}

// The client flags are on every client command and serve keeps its own
// -r/--rpc-socket, untouched.
func TestClientFlagsDoNotClashWithServe(t *testing.T) {
	root := newRootCmd()
	for _, args := range clientCommands {
		cmd, _, err := root.Find(args)
		if err != nil {
			t.Fatal(err)
		}
		if f := cmd.Flag("rpc-socket"); f == nil || f.Shorthand != "s" || f.DefValue != defaultRPCSocket() {
			t.Errorf("%s: --rpc-socket is %+v", cmd.CommandPath(), f)
		}
		if cmd.Flag("timeout") == nil {
			t.Errorf("%s: no --timeout", cmd.CommandPath())
		}
	}

	serve := subcommand(t, root, "serve")
	for _, args := range [][]string{{"-r", "/tmp/x.sock"}, {"--rpc-socket", "/tmp/x.sock"}} {
		serve := subcommand(t, newRootCmd(), "serve")
		if err := serve.ParseFlags(args); err != nil {
			t.Fatalf("serve %q: %v", args, err)
		}
		if got := serve.Flag("rpc-socket").Value.String(); got != "/tmp/x.sock" {
			t.Errorf("serve %q: rpc-socket %q", args, got)
		}
	}
	if f := serve.Flags().ShorthandLookup("r"); f == nil || f.Name != "rpc-socket" || f.DefValue != DefaultRPCSocket {
		t.Errorf("serve -r is %+v", f)
	}
	if serve.Flag("timeout") != nil || serve.Flags().ShorthandLookup("s") != nil {
		t.Error("serve has picked up a client flag")
	}
	checkFails(t, nil, runCLI(t, "", "serve", "-s", "/tmp/x.sock"), "unknown shorthand flag: 's'")
}

func TestHelpListsCommands(t *testing.T) {
	r := runCLI(t, "", "--help")
	for _, c := range []string{"serve", "rpc", "bdev", "cache", "export", "config", "version"} {
		if !strings.Contains(r.stdout, "\n  "+c+" ") {
			t.Errorf("--help does not list %q:\n%s", c, r.stdout)
		}
	}
	r = runCLI(t, "", "cache")
	for _, c := range []string{"create", "delete", "list", "stats", "set-mode", "reset-stats"} {
		if r.code != 0 || !strings.Contains(r.stdout, "\n  "+c+" ") {
			t.Errorf("cache (exit %d) does not list %q:\n%s", r.code, c, r.stdout)
		}
	}
	checkFails(t, nil, runCLI(t, "", "frob"), `blockcache: unknown command "frob" for "blockcache"`)
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0 B", 512: "512 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 4 << 20: "4 MiB",
		3 << 29: "1.5 GiB", 1<<30 - 1: "1 GiB", 1<<30 + 1<<29/5: "1.1 GiB", 1<<64 - 1: "16 EiB",
	} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestStatPercent(t *testing.T) {
	for in, want := range map[string]string{
		"0.0": "0.0", "100.0": "100.0", "12.5": "12.1", "12.50": "12.5", "33.33": "33.3",
		"99.99": "100.0", "0.4": "0.0", "0.5": "0.1", "7": "7", "n/a": "n/a", "1.100": "1.100",
	} {
		if got := statPercent(in); got != want {
			t.Errorf("statPercent(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrintResult(t *testing.T) {
	for raw, want := range map[string]string{
		`"Cache0"`:                  "Cache0\n",
		`"a \"q\" \u00e9"`:          "a \"q\" é\n",
		`true`:                      "true\n",
		`{"b":1,"a":[1,{"c":"é"}]}`: "{\n  \"b\": 1,\n  \"a\": [\n    1,\n    {\n      \"c\": \"\\u00e9\"\n    }\n  ]\n}\n",
		`[]`:                        "[]\n",
	} {
		var b strings.Builder
		if err := printResult(&b, json.RawMessage(raw)); err != nil || b.String() != want {
			t.Errorf("printResult(%s) = %q, %v; want %q", raw, b.String(), err, want)
		}
	}
}

func TestRenderStatsTable(t *testing.T) {
	raw := `{"usage":{"occupancy":{"count":12,"percentage":"1.20","units":"4KiB blocks"}},` +
		`"requests":{"rd_hits":{"count":3,"percentage":"75.0","units":"Requests"},"extra_key":{"count":1234567,"percentage":"25.0","units":"Requests"}},` +
		`"future":{"x":{"count":0,"percentage":"0.0","units":"Things"}}}`
	sections, err := parseStats(json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := writeStats(&b, [][2]string{{"Cache name", "C0"}, {"Cache mode", "wt"}}, sections); err != nil {
		t.Fatal(err)
	}
	want := `Cache name  C0
Cache mode  wt

╔════════════════════╤═════════╤══════╤═════════════╗
║ Usage statistics   │   Count │    % │ Units       ║
╠════════════════════╪═════════╪══════╪═════════════╣
║ Occupancy          │      12 │  1.2 │ 4KiB blocks ║
╚════════════════════╧═════════╧══════╧═════════════╝

╔════════════════════╤═════════╤══════╤═════════════╗
║ Request statistics │   Count │    % │ Units       ║
╠════════════════════╪═════════╪══════╪═════════════╣
║ Read hits          │       3 │ 75.0 │ Requests    ║
║ extra_key          │ 1234567 │ 25.0 │ Requests    ║
╚════════════════════╧═════════╧══════╧═════════════╝

╔════════════════════╤═════════╤══════╤═════════════╗
║ future             │   Count │    % │ Units       ║
╠════════════════════╪═════════╪══════╪═════════════╣
║ x                  │       0 │  0.0 │ Things      ║
╚════════════════════╧═════════╧══════╧═════════════╝
`
	if b.String() != want {
		t.Errorf("stats table\n%s\nwant\n%s", b.String(), want)
	}
	if _, err := parseStats(json.RawMessage(`[1]`)); err == nil {
		t.Error("parseStats accepted an array")
	}
}

func subcommand(t *testing.T, root *cobra.Command, name string) *cobra.Command {
	t.Helper()
	for _, c := range root.Commands() {
		if c.Name() == name {
			return c
		}
	}
	t.Fatalf("no command %q", name)
	return nil
}
