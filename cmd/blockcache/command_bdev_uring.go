package main

import (
	"fmt"

	"blockcache/internal/rpcclient"
)

// uringCreateParams are bdev_uring_create's params as rpc.py sends them;
// block_size only when given.
type uringCreateParams struct {
	Name      string `json:"name"`
	Filename  string `json:"filename"`
	BlockSize uint32 `json:"block_size,omitempty"`
}

// engineHelp describes --engine on bdev create-file.
const engineHelp = "how IO reaches the file: aio (system calls, bdev_aio_create) or uring (io_uring, bdev_uring_create)"

// createEngineBdev makes the file bdev p with engine "aio" (bdev_aio_create)
// or "uring" (bdev_uring_create, which takes neither read-only nor
// buffered) and returns its name.
func createEngineBdev(c *rpcclient.Client, what, engine string, p aioCreateParams) (string, error) {
	switch engine {
	case "aio":
		return createFileBdev(c, what, p)
	case "uring":
		if p.ReadOnly || p.Buffered {
			return "", fmt.Errorf("%s: --engine uring takes neither --read-only nor --buffered: a uring bdev is read-write and direct where the file system allows", what)
		}
		var name string
		_, err := call(c, what, "bdev_uring_create", uringCreateParams{Name: p.Name, Filename: p.Filename, BlockSize: p.BlockSize}, &name)
		return name, err
	}
	return "", fmt.Errorf("%s: --engine %q: want aio or uring", what, engine)
}

// fileDeleteMethod is the delete method of the file bdev name:
// bdev_uring_delete for a uring bdev, else bdev_aio_delete (which answers
// for names that are no file bdev).
func fileDeleteMethod(c *rpcclient.Client, name string) string {
	var bdevs []struct {
		ProductName string `json:"product_name"`
	}
	if _, err := call(c, "", "bdev_get_bdevs", map[string]string{"name": name}, &bdevs); err == nil && len(bdevs) == 1 && bdevs[0].ProductName == "URING bdev" {
		return "bdev_uring_delete"
	}
	return "bdev_aio_delete"
}
