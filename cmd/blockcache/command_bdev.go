package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

func newBdevCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bdev",
		Short: "Inspect block devices (bdevs); make files and disks into bdevs",
		Args:  cobra.NoArgs,
		RunE:  groupRunE,
	}
	o := addClientFlags(cmd)
	cmd.AddCommand(newBdevListCmd(o), newBdevCreateFileCmd(o), newBdevDeleteFileCmd(o))
	cmd.AddCommand(newBdevCreateNBDCmd(o), newBdevDeleteNBDCmd(o))
	return cmd
}

// bdevObject is the part of a bdev_get_bdevs element the table shows.
type bdevObject struct {
	Name           string          `json:"name"`
	ProductName    string          `json:"product_name"`
	BlockSize      uint64          `json:"block_size"`
	NumBlocks      uint64          `json:"num_blocks"`
	Claimed        bool            `json:"claimed"`
	ClaimType      string          `json:"claim_type"`
	DriverSpecific json.RawMessage `json:"driver_specific"`
}

func newBdevListCmd(o *clientOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list [NAME]",
		Aliases: []string{"ls"},
		Short:   "List bdevs (bdev_get_bdevs), or the one named NAME or one of its aliases",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var params any
			what := "bdev list"
			if len(args) == 1 {
				params = map[string]string{"name": args[0]}
				what += " " + args[0]
			}
			return o.with(func(c *rpcclient.Client) error {
				var bdevs []bdevObject
				raw, err := call(c, what, "bdev_get_bdevs", params, &bdevs)
				if err != nil {
					return err
				}
				if asJSON {
					return printResult(cmd.OutOrStdout(), raw)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tPRODUCT\tSIZE\tBLOCK SIZE\tCLAIMED")
				for _, b := range bdevs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", b.Name, b.ProductName,
						humanSize(b.NumBlocks*b.BlockSize), b.BlockSize, yesNo(b.Claimed))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print bdev_get_bdevs' result as JSON instead of a table")
	return cmd
}

// groupRunE is the RunE of a command group: with no subcommand it shows the
// group's help. Together with Args: cobra.NoArgs it makes a mistyped
// subcommand an error (`unknown command "x" for "blockcache bdev"`, exit 1)
// where cobra would print the help and exit 0.
func groupRunE(cmd *cobra.Command, _ []string) error {
	return cmd.Help()
}
