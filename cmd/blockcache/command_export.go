package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

func newExportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export bdevs over NBD",
		Args:  cobra.NoArgs,
		RunE:  groupRunE,
	}
	o := addClientFlags(cmd)
	cmd.AddCommand(newExportStartCmd(o), newExportStopCmd(o), newExportListCmd(o))
	return cmd
}

// nbdDisk is one element of nbd_get_disks.
type nbdDisk struct {
	NBDDevice string `json:"nbd_device"`
	BdevName  string `json:"bdev_name"`
}

// nbdDiskState is one element of nbd_get_disks with include_pending: an
// export started, or pending while its bdev is absent.
type nbdDiskState struct {
	nbdDisk
	State   string `json:"state"`
	Pending string `json:"pending"`
}

// allDisks are nbd_get_disks' params listing pending exports too.
var allDisks = map[string]any{"include_pending": true}

func newExportStartCmd(o *clientOpts) *cobra.Command {
	var readOnly bool
	cmd := &cobra.Command{
		Use:   "start BDEV",
		Short: "Export BDEV over the daemon's NBD server and print its URI (nbd_start_disk)",
		Long: `Export BDEV over the daemon's NBD server, under the export name BDEV, and
print the URI clients use, e.g. nbd://127.0.0.1:10809/Cache1
(nbd_start_disk). The export holds a claim on BDEV until it is stopped.
With --read-only clients are told the export is read-only, and every write,
trim and write-zeroes fails with EPERM whatever the client does.`,
		Example: `  uri=$(blockcache export start Cache1) && nbdinfo "$uri"
  blockcache export start Golden --read-only`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			params := map[string]any{"bdev_name": args[0]}
			if readOnly {
				params["readonly"] = true
			}
			return o.with(func(c *rpcclient.Client) error {
				raw, err := call(c, "export start "+args[0], "nbd_start_disk", params, nil)
				if err != nil {
					return err
				}
				return printResult(cmd.OutOrStdout(), raw)
			})
		},
	}
	cmd.Flags().BoolVar(&readOnly, "read-only", false, "export read-only: NBD_FLAG_READ_ONLY, and writes, trims and write-zeroes fail with EPERM (nbd_start_disk's readonly)")
	return cmd
}

func newExportStopCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "stop URI|BDEV",
		Short: "Stop an export, named by its URI or by its bdev (nbd_stop_disk)",
		Long: `Stop an NBD export (nbd_stop_disk). Name it by the URI that export start
printed (the nbd_device of nbd_get_disks) or by the exported bdev's name.
Connected clients are disconnected once their requests in flight finish.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "export stop " + args[0]
			return o.with(func(c *rpcclient.Client) error {
				var disks []nbdDisk
				if _, err := call(c, what, "nbd_get_disks", allDisks, &disks); err != nil {
					return err
				}
				device := ""
				for _, d := range disks {
					if d.NBDDevice == args[0] {
						device = d.NBDDevice
						break
					}
				}
				for _, d := range disks {
					if device == "" && d.BdevName == args[0] {
						device = d.NBDDevice
					}
				}
				if device == "" {
					return fmt.Errorf("%s: no export has that URI or bdev name (see `blockcache export list`)", what)
				}
				_, err := call(c, what, "nbd_stop_disk", map[string]string{"nbd_device": device}, nil)
				return err
			})
		},
	}
}

func newExportListCmd(o *clientOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the NBD exports, started and pending (nbd_get_disks)",
		Long: `List the NBD exports (nbd_get_disks with include_pending): each one's
bdev, URI and state: started, or pending with why (its bdev is absent: a
volume waiting for its core; it starts by itself when the bdev is back).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.with(func(c *rpcclient.Client) error {
				var disks []nbdDiskState
				raw, err := call(c, "export list", "nbd_get_disks", allDisks, &disks)
				if err != nil {
					return err
				}
				if asJSON {
					return printResult(cmd.OutOrStdout(), raw)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "BDEV\tURI\tSTATE")
				for _, d := range disks {
					state := d.State
					if d.Pending != "" {
						state += ": " + d.Pending
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", d.BdevName, d.NBDDevice, state)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print nbd_get_disks' result (with include_pending) as JSON instead of a table")
	return cmd
}
