package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"blockcache/internal/rpcclient"
)

// nbdClientCreateParams are bdev_nbd_client_create's params; a knob is
// sent only when its flag was given, so the daemon's defaults apply.
type nbdClientCreateParams struct {
	Name                 string  `json:"name"`
	URI                  string  `json:"uri"`
	UUID                 string  `json:"uuid,omitempty"`
	Connections          *int    `json:"connections,omitempty"`
	ReconnectDelaySec    *uint32 `json:"reconnect_delay_sec,omitempty"`
	CtrlrLossTimeoutSec  *int32  `json:"ctrlr_loss_timeout_sec,omitempty"`
	FastIOFailTimeoutSec *uint32 `json:"fast_io_fail_timeout_sec,omitempty"`
	IOTimeoutSec         *uint32 `json:"io_timeout_sec,omitempty"`
}

func newBdevCreateNBDCmd(o *clientOpts) *cobra.Command {
	var p nbdClientCreateParams
	var conns int
	var delay, fail, ioTimeout uint32
	var loss int32
	cmd := &cobra.Command{
		Use:   "create-nbd NAME URI [--connections N] [--reconnect-delay-sec S] [--ctrlr-loss-timeout-sec S] [--fast-io-fail-timeout-sec S] [--io-timeout-sec S]",
		Short: "Make the export at an NBD URI into the bdev NAME (bdev_nbd_client_create)",
		Long: `Connect to the NBD export at URI and make it the bdev NAME
(bdev_nbd_client_create), printing its name: a remote core for a cache.
URI is nbd://host[:port]/export or nbd+unix:///export?socket=PATH. The
bdev's size and block size are the export's; the server must be reachable
now.

A lost connection is re-established every --reconnect-delay-sec (1);
requests wait for it up to --fast-io-fail-timeout-sec (30), then fail with
EIO; after --ctrlr-loss-timeout-sec (-1: never) the bdev is removed. A
request with no answer in --io-timeout-sec (30; 0: no limit) drops the
connection. See docs/remote.md.`,
		Example: `  qemu-nbd -f qcow2 -t -e 4 -k /run/core.sock core.qcow2 &
  blockcache bdev create-nbd Core0 'nbd+unix:///?socket=/run/core.sock'
  blockcache bdev create-nbd Core1 nbd://storage.example:10809/vol1 --connections 4`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Name, p.URI = args[0], args[1]
			f := cmd.Flags()
			if f.Changed("connections") {
				p.Connections = &conns
			}
			if f.Changed("reconnect-delay-sec") {
				p.ReconnectDelaySec = &delay
			}
			if f.Changed("ctrlr-loss-timeout-sec") {
				p.CtrlrLossTimeoutSec = &loss
			}
			if f.Changed("fast-io-fail-timeout-sec") {
				p.FastIOFailTimeoutSec = &fail
			}
			if f.Changed("io-timeout-sec") {
				p.IOTimeoutSec = &ioTimeout
			}
			what := "bdev create-nbd " + p.Name
			return o.with(func(c *rpcclient.Client) error {
				var name string
				if _, err := call(c, what, "bdev_nbd_client_create", p, &name); err != nil {
					return err
				}
				_, err := fmt.Fprintln(cmd.OutOrStdout(), name)
				return err
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&conns, "connections", 1, "connections to open when the server advertises multi-conn")
	f.Uint32Var(&delay, "reconnect-delay-sec", 1, "seconds between reconnect attempts")
	f.Int32Var(&loss, "ctrlr-loss-timeout-sec", -1, "seconds after a loss before the bdev is removed; -1 never, 0 at once")
	f.Uint32Var(&fail, "fast-io-fail-timeout-sec", 30, "seconds requests wait for a lost connection before failing; 0 until removed")
	f.Uint32Var(&ioTimeout, "io-timeout-sec", 30, "seconds without an answer before a request drops the connection; 0 no limit")
	f.StringVar(&p.UUID, "uuid", "", "the bdev's UUID (default: derived from the URI)")
	return cmd
}

func newBdevDeleteNBDCmd(o *clientOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "delete-nbd NAME",
		Short: "Disconnect and delete the NBD client bdev NAME (bdev_nbd_client_delete)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.with(func(c *rpcclient.Client) error {
				_, err := call(c, "bdev delete-nbd "+args[0], "bdev_nbd_client_delete", map[string]string{"name": args[0]}, nil)
				return err
			})
		},
	}
}
