package nbdproto

import "syscall"

// Error values of replies. Each equals the Linux errno of the same name.
const (
	EPERM     uint32 = 1
	EIO       uint32 = 5
	ENOMEM    uint32 = 12
	EINVAL    uint32 = 22
	ENOSPC    uint32 = 28
	EOVERFLOW uint32 = 75
	ENOTSUP   uint32 = 95
	ESHUTDOWN uint32 = 108
)

// SyscallErrno returns the errno an error value of a reply stands for; a
// value the specification does not define is taken as EIO.
func SyscallErrno(v uint32) syscall.Errno {
	switch v {
	case EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN:
		return syscall.Errno(v)
	}
	return syscall.EIO
}
