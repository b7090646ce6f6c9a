// Command blockcache is a block-device cache daemon: a fast cache device in
// front of a slow core device with Open CAS (OCF) semantics, managed over
// SPDK-compatible JSON-RPC and exported over NBD. Its subcommands run the
// daemon and talk to it.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
