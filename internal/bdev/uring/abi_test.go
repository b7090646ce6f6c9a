package uring

import (
	"testing"
	"unsafe"
)

// TestABISizes pins the kernel structures' sizes and the offsets of the
// fields whose place a mistake would move.
func TestABISizes(t *testing.T) {
	for _, c := range []struct {
		what      string
		got, want uintptr
	}{
		{"sizeof(io_uring_params)", unsafe.Sizeof(params{}), 120},
		{"sizeof(io_uring_sqe)", unsafe.Sizeof(sqe{}), 64},
		{"sizeof(io_uring_cqe)", unsafe.Sizeof(cqe{}), 16},
		{"io_uring_params.sq_off", unsafe.Offsetof(params{}.sqOff), 40},
		{"io_uring_params.cq_off", unsafe.Offsetof(params{}.cqOff), 80},
		{"io_uring_sqe.off", unsafe.Offsetof(sqe{}.off), 8},
		{"io_uring_sqe.len", unsafe.Offsetof(sqe{}.len), 24},
		{"io_uring_sqe.rw_flags", unsafe.Offsetof(sqe{}.opFlags), 28},
		{"io_uring_sqe.user_data", unsafe.Offsetof(sqe{}.userData), 32},
		{"io_uring_sqe.addr3", unsafe.Offsetof(sqe{}.addr3), 48},
		{"io_uring_cqe.res", unsafe.Offsetof(cqe{}.res), 8},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
		}
	}
}
