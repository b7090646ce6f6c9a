package vbdev

// ProductName is what bdev_get_bdevs shows for a cached volume. It is SPDK's
// string, so scripts that select OCF vbdevs by product name keep working.
const ProductName = "SPDK OCF"
