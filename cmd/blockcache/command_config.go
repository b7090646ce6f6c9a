package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Save and load the daemon's configuration as an SPDK JSON config",
		Args:  cobra.NoArgs,
		RunE:  groupRunE,
	}
	o := addClientFlags(cmd)
	cmd.AddCommand(newConfigSaveCmd(o), newConfigLoadCmd(o))
	return cmd
}

func newConfigSaveCmd(o *clientOpts) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "save [-o FILE] [SUBSYSTEM...]",
		Short: "Print (or write to FILE) the daemon's configuration, as rpc.py save_config",
		Long: `Print the daemon's configuration as SPDK's rpc.py save_config does: a JSON
config with every subsystem (or only the SUBSYSTEMs named and those they
depend on), indented by 2. config load, serve --config and SPDK's
load_config replay it.`,
		Example: `  blockcache config save -o blockcache.json
  blockcache config save bdev`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.with(func(c *rpcclient.Client) error {
				doc, err := c.SaveConfig(args...)
				if err != nil {
					return callErr("config save", err)
				}
				if output == "" || output == "-" {
					_, err = cmd.OutOrStdout().Write(doc)
					return err
				}
				if err := os.WriteFile(output, doc, 0o644); err != nil {
					return fmt.Errorf("config save: %w", err)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the config to FILE instead of stdout")
	return cmd
}

func newConfigLoadCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "load [FILE|-]",
		Short: "Replay an SPDK JSON config into the daemon, as rpc.py load_config",
		Long: `Replay the JSON config in FILE (stdin with "-" or no argument) into the daemon
as SPDK's rpc.py load_config does: every method must be known to the daemon;
the entries are called in file order. Entries the daemon can no longer call
(start-up only ones) are skipped with a notice.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src := "-"
			if len(args) == 1 {
				src = args[0]
			}
			doc, err := readInput(cmd, src)
			if err != nil {
				return fmt.Errorf("config load: %w", err)
			}
			what := "config load"
			if src != "-" {
				what += " " + src
			}
			return o.with(func(c *rpcclient.Client) error {
				skipped, err := c.LoadConfig(doc)
				if err != nil {
					return callErr(what, err)
				}
				if len(skipped) > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s\n(skipped: %s)\n", rpcclient.MsgConfigSkipped, strings.Join(skipped, ", "))
				}
				return nil
			})
		},
	}
}
