package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

// aioCreateParams are bdev_aio_create's params; block_size is sent only
// when given (the bdev then takes the file's or device's own), as rpc.py
// does.
type aioCreateParams struct {
	Name      string `json:"name"`
	Filename  string `json:"filename"`
	BlockSize uint32 `json:"block_size,omitempty"`
	ReadOnly  bool   `json:"readonly"`
}

// absPath makes path absolute: the daemon opens it, and its working
// directory is not the client's.
func absPath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return abs, nil
}

// isPath reports whether a --cache or --core argument names a file or
// device rather than a bdev: bdev names have no slash.
func isPath(arg string) bool {
	return strings.Contains(arg, "/")
}

// createFileBdev makes a file bdev and returns its name.
func createFileBdev(c *rpcclient.Client, what string, p aioCreateParams) (string, error) {
	var name string
	if _, err := call(c, what, "bdev_aio_create", p, &name); err != nil {
		return "", err
	}
	return name, nil
}

// deleteFileBdev deletes the file bdev name.
func deleteFileBdev(c *rpcclient.Client, what, name string) error {
	_, err := call(c, what, "bdev_aio_delete", map[string]string{"name": name}, nil)
	return err
}

func newBdevCreateFileCmd(o *clientOpts) *cobra.Command {
	var p aioCreateParams
	cmd := &cobra.Command{
		Use:   "create-file NAME PATH [--block-size N] [--read-only]",
		Short: "Make the file or block device PATH into the bdev NAME (bdev_aio_create)",
		Long: `Make the regular file or block device PATH into the bdev NAME
(bdev_aio_create) and print its name. The file must exist; its size is the
bdev's size. The daemon holds it alone while the bdev exists. The block size
is the device's own (512 for a file) unless --block-size is given.`,
		Example: `  truncate -s 1G /var/tmp/core.img
  blockcache bdev create-file Core0 /var/tmp/core.img
  blockcache bdev create-file Disk1 /dev/loop0 --block-size 4096`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Name = args[0]
			what := "bdev create-file " + p.Name
			path, err := absPath(args[1])
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			p.Filename = path
			return o.with(func(c *rpcclient.Client) error {
				name, err := createFileBdev(c, what, p)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), name)
				return err
			})
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&p.BlockSize, "block-size", 0, "the bdev's block size in bytes (default: the device's own, 512 for a file)")
	f.BoolVar(&p.ReadOnly, "read-only", false, "open PATH read-only: writes to the bdev fail")
	return cmd
}

func newBdevDeleteFileCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "delete-file NAME",
		Short: "Delete the file bdev NAME, closing its file (bdev_aio_delete)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.with(func(c *rpcclient.Client) error {
				return deleteFileBdev(c, "bdev delete-file "+args[0], args[0])
			})
		},
	}
}
