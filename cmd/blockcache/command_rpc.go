package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

func newRPCCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rpc METHOD [JSON-PARAMS|-]",
		Short: "Call any JSON-RPC method, as rpc.py does",
		Long: `Call METHOD on the daemon with PARAMS, a JSON object (or "-" to read it from
stdin), sent as given. The result is printed as rpc.py prints it: JSON
indented by 2, or a bare string unquoted. An error reply is printed to stderr
exactly as rpc.py prints it, and the exit status is 1.

docs/rpc.md lists the methods.`,
		Example: `  blockcache rpc spdk_get_version
  blockcache rpc bdev_malloc_create '{"name":"Malloc0","num_blocks":131072,"block_size":512}'
  echo '{"name":"Malloc0"}' | blockcache rpc bdev_get_bdevs -`,
		Args: cobra.RangeArgs(1, 2),
	}
	o := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		method := args[0]
		var params json.RawMessage
		if len(args) == 2 {
			p, err := rpcParams(cmd, args[1])
			if err != nil {
				return err
			}
			params = p
		}
		return o.with(func(c *rpcclient.Client) error {
			res, err := c.CallRaw(method, params)
			var re *rpcclient.ResponseError
			if errors.As(err, &re) {
				fmt.Fprintln(cmd.ErrOrStderr(), re.Error())
				return exitError{1}
			}
			if err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), res)
		})
	}
	return cmd
}

// rpcParams reads the params argument: a JSON object, or "-" for one on
// stdin.
func rpcParams(cmd *cobra.Command, arg string) (json.RawMessage, error) {
	src := "JSON-PARAMS"
	b := []byte(arg)
	if arg == "-" {
		src = "params on stdin"
		var err error
		if b, err = readInput(cmd, "-"); err != nil {
			return nil, err
		}
	}
	b = bytes.TrimSpace(b)
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		return nil, fmt.Errorf("%s is not valid JSON: %v", src, err)
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("%s must be a JSON object, e.g. '{\"name\":\"Malloc0\"}', not %.40s", src, b)
	}
	return b, nil
}
