// Command blockcache is a block-device cache daemon: a fast cache device in
// front of a slow core device with Open CAS (OCF) semantics, managed over
// SPDK-compatible JSON-RPC and exported over NBD. Its subcommands run the
// daemon and talk to it.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "blockcache:", err)
		os.Exit(1)
	}
}
