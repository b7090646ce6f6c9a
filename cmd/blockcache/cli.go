package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

// EnvRPCSocket, when set, replaces DefaultRPCSocket as the default of the
// client commands' -s/--rpc-socket.
const EnvRPCSocket = "BLOCKCACHE_RPC_SOCKET"

// run is the whole program: it builds the command tree, runs args and
// returns the exit status. Errors are printed to stderr as
// "blockcache: <error>", except an exitError, whose command has already
// said what went wrong.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(stderr, "blockcache:", err)
	return 1
}

// exitError ends the program with code after the command printed its own
// message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// clientOpts are the flags every command that talks to the daemon takes.
type clientOpts struct {
	socket  string
	timeout time.Duration
}

// defaultRPCSocket is $BLOCKCACHE_RPC_SOCKET, else DefaultRPCSocket.
func defaultRPCSocket() string {
	if s := os.Getenv(EnvRPCSocket); s != "" {
		return s
	}
	return DefaultRPCSocket
}

// addClientFlags gives a command group -s/--rpc-socket and --timeout, as
// persistent flags so that every subcommand of the group takes them. They
// are defined per group rather than on the root so that they do not clash
// with serve's own -r/--rpc-socket (nor offer serve a --timeout it would
// ignore).
func addClientFlags(cmd *cobra.Command) *clientOpts {
	o := &clientOpts{}
	f := cmd.PersistentFlags()
	f.StringVarP(&o.socket, "rpc-socket", "s", defaultRPCSocket(),
		"daemon's JSON-RPC socket: a Unix socket path, or IP:port for TCP (env "+EnvRPCSocket+")")
	f.DurationVar(&o.timeout, "timeout", rpcclient.DefaultTimeout, "how long to wait to connect and for each reply")
	return o
}

// dial connects to the daemon.
func (o *clientOpts) dial() (*rpcclient.Client, error) {
	if o.timeout <= 0 {
		return nil, fmt.Errorf("--timeout must be positive, not %v", o.timeout)
	}
	c, err := rpcclient.Dial(o.socket, rpcclient.WithTimeout(o.timeout))
	if err != nil {
		// rpcclient words it for rpc.py; say it our way, keeping the cause
		// (e.g. "connect: no such file or directory").
		cause := error(err)
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			cause = op.Err
		}
		return nil, fmt.Errorf("cannot reach the daemon at %s: %v (is `blockcache serve` running?)", o.socket, cause)
	}
	return c, nil
}

// with runs fn on a fresh connection to the daemon.
func (o *clientOpts) with(fn func(c *rpcclient.Client) error) error {
	c, err := o.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(c)
}

// callErr names what failed. An error reply is shortened to its message,
// code and data; the rpc command prints replies in full instead.
func callErr(what string, err error) error {
	var re *rpcclient.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("%s: %v", what, re.Err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// call makes one call and decodes its result into out (unless out is nil).
func call(c *rpcclient.Client, what, method string, params any, out any) (json.RawMessage, error) {
	raw, err := c.Call(method, params)
	if err != nil {
		return nil, callErr(what, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s: unexpected %s result: %w", what, method, err)
		}
	}
	return raw, nil
}

// printResult prints a result as rpc.py does: JSON with indent 2, except a
// string, which print() writes bare.
func printResult(w io.Writer, raw json.RawMessage) error {
	var s string
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		_, err := fmt.Fprintln(w, s)
		return err
	}
	b, err := rpcclient.Indent(raw)
	if err != nil {
		return fmt.Errorf("formatting the result: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// humanSize formats a byte count with binary units: "512 B", "64 MiB",
// "1.5 GiB".
func humanSize(n uint64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(1024), 0
	for m := n / 1024; m >= 1024 && exp < len(units)-1; m /= 1024 {
		div *= 1024
		exp++
	}
	// One decimal, rounded half up, dropped when it is zero.
	// (n%div)*10 < 10·2^60 cannot overflow, unlike n*10.
	tenths := n/div*10 + (n%div*10+div/2)/div
	if tenths >= 1024*10 && exp < len(units)-1 { // rounded up to the next unit
		div *= 1024
		exp++
		tenths = n/div*10 + (n%div*10+div/2)/div
	}
	if tenths%10 == 0 {
		return fmt.Sprintf("%d %ciB", tenths/10, units[exp])
	}
	return fmt.Sprintf("%d.%d %ciB", tenths/10, tenths%10, units[exp])
}

// yesNo is a bool for tables.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// readInput reads a named file, or stdin for "-".
func readInput(cmd *cobra.Command, name string) ([]byte, error) {
	if name == "-" {
		b, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		return b, nil
	}
	return os.ReadFile(name)
}

// orderedMember is one member of a JSON object, in document order.
type orderedMember struct {
	Key   string
	Value json.RawMessage
}

// orderedObject splits a JSON object into its members, keeping their order
// (which encoding/json's maps lose).
func orderedObject(raw json.RawMessage) ([]orderedMember, error) {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("not a JSON object: %.40s", raw)
	}
	var ms []orderedMember
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		ms = append(ms, orderedMember{key, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	return ms, nil
}
