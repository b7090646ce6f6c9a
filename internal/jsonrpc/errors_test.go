package jsonrpc

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func TestErrnoError(t *testing.T) {
	for errno, msg := range map[syscall.Errno]string{
		syscall.ENODEV:     "No such device",
		syscall.EEXIST:     "File exists",
		syscall.EBUSY:      "Device or resource busy",
		syscall.EINVAL:     "Invalid argument",
		syscall.ENOMEM:     "Cannot allocate memory",
		syscall.EPERM:      "Operation not permitted",
		syscall.ENOENT:     "No such file or directory",
		syscall.EIO:        "Input/output error",
		syscall.ENOSPC:     "No space left on device",
		syscall.Errno(0):   "Success",
		syscall.Errno(133): "Memory page has hardware error",
		syscall.Errno(41):  "Unknown error 41",
		syscall.Errno(999): "Unknown error 999",
	} {
		e := ErrnoError(errno)
		if e.Code != -int(errno) || e.Message != msg {
			t.Errorf("ErrnoError(%d) = {%d %q}, want {%d %q}", int(errno), e.Code, e.Message, -int(errno), msg)
		}
	}
}

func TestErrorHelpers(t *testing.T) {
	e := Errorf(-32603, "Could not create OCF vbdev: %d", -1)
	if e.Code != -32603 || e.Message != "Could not create OCF vbdev: -1" {
		t.Fatalf("Errorf: %+v", e)
	}
	d := e.WithData("because %s", "reasons")
	if e.Data != "" || d.Data != "because reasons" || d.Message != e.Message {
		t.Fatalf("WithData changed the original or lost fields: %+v %+v", e, d)
	}
	var got *Error
	if !errors.As(fmt.Errorf("wrapped: %w", d), &got) || got != d {
		t.Fatal("errors.As does not find a wrapped *Error")
	}
	if s := d.Error(); s != "Could not create OCF vbdev: -1 (code -32603): because reasons" {
		t.Fatalf("Error() = %q", s)
	}
	if toError(errors.New("plain")).Code != CodeInternalError {
		t.Fatal("plain errors must map to -32603")
	}
}
