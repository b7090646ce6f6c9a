package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

// aioCreateParams are bdev_aio_create's params; block_size is sent only
// when given (the bdev then takes the file's or device's own), as rpc.py
// does, and buffered (ours) only when set.
type aioCreateParams struct {
	Name      string `json:"name"`
	Filename  string `json:"filename"`
	BlockSize uint32 `json:"block_size,omitempty"`
	ReadOnly  bool   `json:"readonly"`
	Buffered  bool   `json:"buffered,omitempty"`
}

// bufferedHelp describes --buffered, on bdev create-file and cache create.
const bufferedHelp = "use the page cache instead of direct IO (O_DIRECT, the default where the file system allows it)"

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

// noteBuffered tells w when the file bdev name, made without --buffered,
// runs through the page cache because its file system refuses O_DIRECT
// (bdev_get_bdevs' driver_specific.aio.direct_refused).
func noteBuffered(c *rpcclient.Client, w io.Writer, what, name, path string) error {
	var bdevs []struct {
		DriverSpecific struct {
			AIO struct {
				DirectRefused string `json:"direct_refused"`
			} `json:"aio"`
			Uring struct {
				DirectRefused string `json:"direct_refused"`
			} `json:"uring"`
		} `json:"driver_specific"`
	}
	if _, err := call(c, what, "bdev_get_bdevs", map[string]string{"name": name}, &bdevs); err != nil {
		return err
	}
	if len(bdevs) == 1 && bdevs[0].DriverSpecific.AIO.DirectRefused+bdevs[0].DriverSpecific.Uring.DirectRefused != "" {
		ds := bdevs[0].DriverSpecific
		_, err := fmt.Fprintf(w, "blockcache: %s: %s: %s; bdev %s uses the page cache\n", what, path, ds.AIO.DirectRefused+ds.Uring.DirectRefused, name)
		return err
	}
	return nil
}

// bdevExists reports whether the bdev name exists: bdev_get_bdevs answers
// -19 (ENODEV) for a name no bdev has.
func bdevExists(c *rpcclient.Client, what, name string) (bool, error) {
	_, err := c.Call("bdev_get_bdevs", map[string]string{"name": name})
	var re *rpcclient.ResponseError
	if errors.As(err, &re) && re.Err.Code == -int(syscall.ENODEV) {
		return false, nil
	}
	if err != nil {
		return false, callErr(what, err)
	}
	return true, nil
}

// deleteFileBdev deletes the file bdev name.
func deleteFileBdev(c *rpcclient.Client, what, name string) error {
	_, err := call(c, what, fileDeleteMethod(c, name), map[string]string{"name": name}, nil)
	return err
}

func newBdevCreateFileCmd(o *clientOpts) *cobra.Command {
	var p aioCreateParams
	var engine string
	cmd := &cobra.Command{
		Use:   "create-file NAME PATH [--block-size N] [--read-only] [--buffered] [--engine aio|uring]",
		Short: "Make the file or block device PATH into the bdev NAME (bdev_aio_create)",
		Long: `Make the regular file or block device PATH into the bdev NAME
(bdev_aio_create) and print its name. The file must exist; its size is the
bdev's size. The daemon holds it alone while the bdev exists. The block size
is the device's own (512 for a file) unless --block-size is given.

IO bypasses the page cache (O_DIRECT), as SPDK's aio bdev does; where the
file system refuses that (ramfs, tmpfs before Linux 6.6) the bdev uses the
page cache, and this command says so on stderr. --buffered asks for the page
cache.

--engine uring makes a uring bdev instead (bdev_uring_create): the same
file bdev, with its IO submitted through io_uring, a ring per bdev, rather
than one blocking system call per IO.`,
		Example: `  truncate -s 1G /var/tmp/core.img
  blockcache bdev create-file Core0 /var/tmp/core.img
  blockcache bdev create-file Disk1 /dev/loop0 --block-size 4096
  blockcache bdev create-file Fast0 /dev/nvme0n1 --engine uring`,
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
				name, err := createEngineBdev(c, what, engine, p)
				if err != nil {
					return err
				}
				if !p.Buffered {
					if err := noteBuffered(c, cmd.ErrOrStderr(), what, name, p.Filename); err != nil {
						return err
					}
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), name)
				return err
			})
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&p.BlockSize, "block-size", 0, "the bdev's block size in bytes (default: the device's own, 512 for a file)")
	f.BoolVar(&p.ReadOnly, "read-only", false, "open PATH read-only: writes to the bdev fail")
	f.BoolVar(&p.Buffered, "buffered", false, bufferedHelp)
	f.StringVar(&engine, "engine", "aio", engineHelp)
	return cmd
}

func newBdevDeleteFileCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "delete-file NAME",
		Short: "Delete the file bdev NAME, closing its file (bdev_aio_delete or bdev_uring_delete)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.with(func(c *rpcclient.Client) error {
				return deleteFileBdev(c, "bdev delete-file "+args[0], args[0])
			})
		},
	}
}
