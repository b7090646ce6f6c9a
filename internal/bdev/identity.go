package bdev

// Identifier is implemented by devices that can name the storage behind
// them in a way that survives renaming the bdev and renumbering the host's
// disks: for a regular file its device and inode, for a host block device a
// stable id such as its /dev/disk/by-id name. The cache records a core's
// identity so that dirty data is never written back to another device that
// merely has the same bdev name and size.
//
// Identity returns "" when the device cannot tell. It is safe for
// concurrent use.
type Identifier interface {
	Identity() string
}

// IdentityOf returns d's identity, or "" when d does not implement
// Identifier or cannot tell.
func IdentityOf(d Device) string {
	if x, ok := d.(Identifier); ok {
		return x.Identity()
	}
	return ""
}
