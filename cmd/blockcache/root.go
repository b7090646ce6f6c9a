package main

import (
	"net"

	"github.com/spf13/cobra"
)

// version is the blockcache release, set at link time with
// -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "blockcache",
		Short: "A block-device cache with Open CAS semantics, SPDK-compatible RPC and NBD export",
		Long: `blockcache puts a fast cache device in front of a slow core device, with
Open CAS (OCF) cache modes (wt, wb, wa, wi, pt, wo), and exports the cached
volume over NBD. It is managed over SPDK-compatible JSON-RPC, so SPDK's rpc.py
and JSON configs work unchanged.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd())
	root.AddCommand(newRPCCmd(), newBdevCmd(), newCacheCmd(), newExportCmd(), newConfigCmd(), newVersionCmd())
	subcommandNamed(root, "cache").AddCommand(newCacheFlushCmds()...)
	root.AddCommand(newCheckCmd(), newInspectCmd(), newRecoverCmd())
	root.AddCommand(newSimCmd())
	root.AddCommand(newTopCmd())
	root.AddCommand(newPerfCmd())
	return root
}

func splitHostPort(addr string) (host, port string) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, ""
	}
	return h, p
}
