package file_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"blockcache/internal/aligned"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/file"
	"blockcache/internal/testutil"
)

// residentPages counts the pages of path in the page cache (mincore).
func residentPages(t *testing.T, path string, size int) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (size+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// TestDirectBypassesPageCache writes and reads 1 MiB through a direct and
// a buffered device on ext4: the direct one's fd has O_DIRECT and leaves no
// page of the file in the page cache; the buffered one's does not and does.
func TestDirectBypassesPageCache(t *testing.T) {
	const size = 1 << 20
	for _, direct := range []bool{true, false} {
		path := sparsePath(t, size)
		d := mustOpen(t, path, file.Options{Direct: direct, BufferedFallback: true})
		if d.Direct() != direct || d.DirectRefused() != nil {
			t.Fatalf("Direct %v: device says Direct %v, refused %v", direct, d.Direct(), d.DirectRefused())
		}
		flags := testutil.OpenFlags(t, 0, path)
		if len(flags) != 1 || (flags[0]&unix.O_DIRECT != 0) != direct {
			t.Fatalf("Direct %v: fd flags %o, want O_DIRECT %v", direct, flags, direct)
		}
		buf := aligned.Bytes(size, aligned.Page)
		copy(buf, bdevtest.Pattern(7, size))
		bdevtest.MustWrite(t, d, buf, 0, false)
		if got := bdevtest.MustRead(t, d, 0, size); !bytes.Equal(got, buf) {
			t.Fatalf("Direct %v: the data came back different", direct)
		}
		pages := residentPages(t, path, size)
		if direct && pages != 0 {
			t.Fatalf("direct IO left %d pages of the file in the page cache", pages)
		}
		if !direct && pages == 0 {
			t.Fatal("buffered IO left no page in the page cache: the check cannot see the difference")
		}
	}
}

// mountRamfs mounts a ramfs, which refuses O_DIRECT at open with EINVAL
// (tmpfs accepts it since Linux 6.6), and returns its directory.
func mountRamfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ramfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("blockcache-test", dir, "ramfs", 0, ""); err != nil {
		t.Fatalf("mount ramfs on %s (the tests run as root): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestBufferedFallback opens a file on ramfs: Direct alone fails naming
// O_DIRECT; with BufferedFallback the device opens buffered, says why, and
// serves IO.
func TestBufferedFallback(t *testing.T) {
	path := filepath.Join(mountRamfs(t), "disk.img")
	if err := os.WriteFile(path, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := file.Open("AIO0", path, file.Options{Direct: true})
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "O_DIRECT") {
		t.Fatalf("Direct on ramfs: %v, want EINVAL naming O_DIRECT", err)
	}
	d := mustOpen(t, path, file.Options{Direct: true, BufferedFallback: true})
	if d.Direct() || !errors.Is(d.DirectRefused(), unix.EINVAL) || d.MemAlign() != 1 {
		t.Fatalf("fallback: Direct %v, refused %v, MemAlign %d", d.Direct(), d.DirectRefused(), d.MemAlign())
	}
	if flags := testutil.OpenFlags(t, 0, path); len(flags) != 1 || flags[0]&unix.O_DIRECT != 0 {
		t.Fatalf("fallback fd flags %o, want one fd without O_DIRECT", flags)
	}
	bdevtest.MustWrite(t, d, bdevtest.Pattern(3, 4096), 8192, true)
	if got := bdevtest.MustRead(t, d, 8192, 4096); !bytes.Equal(got, bdevtest.Pattern(3, 4096)) {
		t.Fatal("the buffered fallback returned other data")
	}
}

// TestDirectSubSlices does direct IO from buffers at every 512-byte offset
// of an aligned buffer and at odd addresses, more at once than the bounce
// pool keeps, and checks every byte.
func TestDirectSubSlices(t *testing.T) {
	d := openDirect(t, sparsePath(t, 4<<20), file.Options{})
	if a := d.MemAlign(); a < 1 || a > aligned.Page || a&(a-1) != 0 {
		t.Fatalf("MemAlign %d", a)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			off := int64(i) * 256 << 10
			shift := []int{0, 512, 1024, 3584, 1, 7}[i%6]
			n := 128<<10 + 512*i
			src := aligned.Bytes(n+shift, aligned.Page)[shift:]
			copy(src, bdevtest.Pattern(uint64(i), n))
			if err := d.WriteAt(src, off, i%3 == 0); err != nil {
				t.Error(err)
				return
			}
			dst := aligned.Bytes(n+4096, aligned.Page)[4096-shift%4096:][:n]
			if err := d.ReadAt(dst, off); err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(dst, bdevtest.Pattern(uint64(i), n)) {
				t.Errorf("IO %d (buffer offset %d, %d bytes) came back different", i, shift, n)
			}
		})
	}
	wg.Wait()
}

// TestDirectIOAllocatesNothing: an aligned direct read or write allocates
// nothing, and neither does an unaligned one once the bounce pool holds a
// buffer.
func TestDirectIOAllocatesNothing(t *testing.T) {
	d := openDirect(t, sparsePath(t, 1<<20), file.Options{})
	buf := aligned.Bytes(64<<10, aligned.Page)
	odd := aligned.Bytes(64<<10+1, aligned.Page)[1:]
	tests := []struct {
		name string
		io   func() error
	}{
		{"aligned read", func() error { return d.ReadAt(buf, 4096) }},
		{"aligned write", func() error { return d.WriteAt(buf, 4096, false) }},
		{"unaligned read", func() error { return d.ReadAt(odd, 8192) }},
		{"unaligned write", func() error { return d.WriteAt(odd, 8192, false) }},
	}
	for _, tc := range tests {
		if err := tc.io(); err != nil { // fills the bounce pool
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(50, func() {
			if err := tc.io(); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: %v allocations per IO, want 0", tc.name, n)
		}
	}
}

// mount4Kn makes an ext4 file system on a loop device with 4096-byte
// sectors, whose direct IO needs 4096-byte alignment, mounts it and
// returns its directory.
func mount4Kn(t *testing.T) string {
	t.Helper()
	dev := loopDevice(t, 32<<20, 4096)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", dev, err, out)
	}
	dir := filepath.Join(t.TempDir(), "ext4-4k")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, dir, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", dev, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestBufferedFallbackCoarseAlignment: on a file system whose direct IO
// needs 4096-byte alignment, Direct alone gives 4096-byte blocks; with
// BufferedFallback a file keeps 512-byte blocks (a cache needs them) and
// opens buffered, saying why; asked for 4096-byte blocks it stays direct.
func TestBufferedFallbackCoarseAlignment(t *testing.T) {
	path := filepath.Join(mount4Kn(t), "disk.img")
	if err := file.CreateSparse(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, path, file.Options{Direct: true})
	if !d.Direct() || d.Info().BlockSize != 4096 {
		t.Fatalf("Direct alone: direct %v, block size %d; want direct, 4096", d.Direct(), d.Info().BlockSize)
	}
	d.Close()

	d = mustOpen(t, path, file.Options{Direct: true, BufferedFallback: true})
	if d.Direct() || d.Info().BlockSize != 512 || d.DirectRefused() == nil ||
		!strings.Contains(d.DirectRefused().Error(), "needs 4096-byte alignment, coarser than the 512-byte block size") {
		t.Fatalf("fallback: direct %v, block size %d, refused %v", d.Direct(), d.Info().BlockSize, d.DirectRefused())
	}
	if flags := testutil.OpenFlags(t, 0, path); len(flags) != 1 || flags[0]&unix.O_DIRECT != 0 {
		t.Fatalf("fallback fd flags %o, want one fd without O_DIRECT", flags)
	}
	bdevtest.MustWrite(t, d, bdevtest.Pattern(5, 512), 512, true)
	if got := bdevtest.MustRead(t, d, 512, 512); !bytes.Equal(got, bdevtest.Pattern(5, 512)) {
		t.Fatal("a 512-byte block on the fallback came back different")
	}
	d.Close()

	d = mustOpen(t, path, file.Options{Direct: true, BufferedFallback: true, BlockSize: 4096})
	if !d.Direct() || d.DirectRefused() != nil || d.Info().BlockSize != 4096 {
		t.Fatalf("4096-byte blocks: direct %v, refused %v, block size %d", d.Direct(), d.DirectRefused(), d.Info().BlockSize)
	}
	if got := bdevtest.MustRead(t, d, 0, 4096); !bytes.Equal(got[512:1024], bdevtest.Pattern(5, 512)) {
		t.Fatal("the direct device does not see what the buffered one wrote")
	}
}
