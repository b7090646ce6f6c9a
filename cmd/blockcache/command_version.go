package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

func newVersionCmd() *cobra.Command {
	var daemon bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print blockcache's version (and with --daemon, the running daemon's)",
		Args:  cobra.NoArgs,
	}
	o := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		out := cmd.OutOrStdout()
		fmt.Fprintf(out, "blockcache version %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		if !daemon {
			return nil
		}
		return o.with(func(c *rpcclient.Client) error {
			var v struct {
				Version string `json:"version"`
			}
			if _, err := call(c, "version --daemon", "spdk_get_version", nil, &v); err != nil {
				return err
			}
			fmt.Fprintf(out, "daemon: %s\n", v.Version)
			return nil
		})
	}
	cmd.Flags().BoolVar(&daemon, "daemon", false, "also ask the daemon for its version (spdk_get_version)")
	return cmd
}
