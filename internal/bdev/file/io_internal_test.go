package file

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"blockcache/internal/bdev"
)

// openForSyscallTest opens a 4 MiB sparse file whose system calls the test
// then replaces.
func openForSyscallTest(t *testing.T) *Device {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk")
	d, err := Open("AIO0", path, Options{Create: true, Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// flaky returns a call that first fails with EINTR, then transfers at most
// 512 bytes per call, counting its calls.
func flaky(real func(int, []byte, int64) (int, error), calls *int) func(int, []byte, int64) (int, error) {
	return func(fd int, p []byte, off int64) (int, error) {
		*calls++
		if *calls == 1 {
			return 0, unix.EINTR
		}
		return real(fd, p[:min(len(p), 512)], off)
	}
}

func TestTransferResumesAfterEINTRAndShortIO(t *testing.T) {
	d := openForSyscallTest(t)
	var writes, reads int
	d.sys.pwrite = flaky(unix.Pwrite, &writes)
	d.sys.pread = flaky(unix.Pread, &reads)
	want := bytes.Repeat([]byte("0123456789abcdef"), 4096/16)
	if err := d.WriteAt(want, 8192, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if err := d.ReadAt(got, 8192); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data differs after short transfers")
	}
	// One EINTR plus at least eight 512-byte pieces each way.
	if writes < 9 || reads < 9 {
		t.Fatalf("%d write and %d read calls, want at least 9 each", writes, reads)
	}
}

func TestTransferReportsEndOfFile(t *testing.T) {
	d := openForSyscallTest(t)
	d.sys.pread = func(int, []byte, int64) (int, error) { return 0, nil }
	err := d.ReadAt(make([]byte, 512), 0)
	var ioErr *bdev.IOError
	if !errors.As(err, &ioErr) || !errors.Is(err, io.ErrUnexpectedEOF) || bdev.Errno(err) != syscall.EIO {
		t.Fatalf("read of a truncated file = %v, want an IOError wrapping ErrUnexpectedEOF (EIO)", err)
	}
	if ioErr.Op != "read" || ioErr.Offset != 0 || ioErr.Len != 512 || ioErr.Dev != "AIO0" {
		t.Fatalf("IOError = %+v", ioErr)
	}
}

func TestFUAFallsBackToFdatasync(t *testing.T) {
	d := openForSyscallTest(t)
	var dsyncCalls, syncs int
	d.sys.pwriteDSync = func(int, []byte, int64) (int, error) { dsyncCalls++; return 0, unix.EOPNOTSUPP }
	d.sys.fdatasync = func(fd int) error { syncs++; return unix.Fdatasync(fd) }
	p := bytes.Repeat([]byte{7}, 4096)
	for range 2 {
		if err := d.WriteAt(p, 0, true); err != nil {
			t.Fatal(err)
		}
	}
	if dsyncCalls != 1 || syncs != 2 {
		t.Fatalf("pwritev2 called %d times, fdatasync %d times; want 1 and 2", dsyncCalls, syncs)
	}
	got := make([]byte, 4096)
	if err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read back after fallback FUA write: %v", err)
	}
	// A non-FUA write never syncs.
	if err := d.WriteAt(p, 0, false); err != nil || syncs != 2 {
		t.Fatalf("plain write: err %v, %d syncs", err, syncs)
	}
}

func TestFUAUsesDSyncWrite(t *testing.T) {
	d := openForSyscallTest(t)
	var dsyncCalls, syncs int
	real := d.sys.pwriteDSync
	d.sys.pwriteDSync = func(fd int, p []byte, off int64) (int, error) { dsyncCalls++; return real(fd, p, off) }
	d.sys.fdatasync = func(int) error { syncs++; return nil }
	if err := d.WriteAt(make([]byte, 512), 0, true); err != nil {
		t.Fatal(err)
	}
	if dsyncCalls == 0 || syncs != 0 {
		t.Fatalf("pwritev2 called %d times, fdatasync %d times; want >0 and 0", dsyncCalls, syncs)
	}
}

func TestWriteZeroesFallsBackToWriting(t *testing.T) {
	d := openForSyscallTest(t)
	var fallocs int
	d.sys.fallocate = func(int, uint32, int64, int64) error { fallocs++; return unix.EOPNOTSUPP }
	// Zero more than one zero buffer's worth (maxBounceBytes), unaligned
	// to it, between two blocks of data.
	const size = 3 << 20
	if err := d.WriteAt(bytes.Repeat([]byte{0xaa}, size), 0, false); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := d.WriteZeroes(512, size-1024); err != nil {
			t.Fatal(err)
		}
	}
	if fallocs != 1 {
		t.Fatalf("fallocate tried %d times, want once", fallocs)
	}
	got := make([]byte, size)
	if err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:512], bytes.Repeat([]byte{0xaa}, 512)) || !bytes.Equal(got[size-512:], bytes.Repeat([]byte{0xaa}, 512)) {
		t.Fatal("write-zeroes fallback spilled outside its range")
	}
	if !bytes.Equal(got[512:size-512], make([]byte, size-1024)) {
		t.Fatal("write-zeroes fallback left data behind")
	}
	// Discard does not fall back: it reports that it is not supported.
	err := d.Discard(0, 512)
	if !errors.Is(err, bdev.ErrNotSupported) || bdev.Errno(err) != syscall.EOPNOTSUPP {
		t.Fatalf("Discard without hole punching = %v, want ErrNotSupported/EOPNOTSUPP", err)
	}
}

func TestSyscallErrorsBecomeIOErrors(t *testing.T) {
	d := openForSyscallTest(t)
	d.sys.fdatasync = func(int) error { return unix.EIO }
	d.sys.fallocate = func(int, uint32, int64, int64) error { return unix.ENOSPC }
	d.sys.pwrite = func(int, []byte, int64) (int, error) { return 0, unix.ENOSPC }
	tests := []struct {
		op   string
		err  error
		want syscall.Errno
	}{
		{"flush", d.Flush(), syscall.EIO},
		{"write-zeroes", d.WriteZeroes(0, 512), syscall.ENOSPC},
		{"write", d.WriteAt(make([]byte, 512), 512, false), syscall.ENOSPC},
	}
	for _, tc := range tests {
		var ioErr *bdev.IOError
		if !errors.As(tc.err, &ioErr) || ioErr.Op != tc.op || bdev.Errno(tc.err) != tc.want {
			t.Errorf("%s: %v, want an IOError for %s with errno %v", tc.op, tc.err, tc.op, tc.want)
		}
	}
}
