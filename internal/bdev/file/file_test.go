package file_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/file"
)

const testSize = 1 << 20 // 1 MiB

// sparsePath returns the path of a new sparse file of size bytes.
func sparsePath(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := file.CreateSparse(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustOpen(t *testing.T, path string, opts file.Options) *file.Device {
	t.Helper()
	d, err := file.Open("AIO0", path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// openDirect opens path with O_DIRECT; the test directories are on a file
// system that supports it (ext4 here).
func openDirect(t *testing.T, path string, opts file.Options) *file.Device {
	t.Helper()
	opts.Direct = true
	d, err := file.Open("AIO0", path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// loopDevice attaches a new sparse file to a free loop device and returns
// the device path. The tests run as root (`make test`), with losetup.
func loopDevice(t *testing.T, size int64, sectorSize int) string {
	t.Helper()
	backing := sparsePath(t, size)
	args := []string{"--find", "--show"}
	if sectorSize != 512 {
		args = append(args, "--sector-size", fmt.Sprint(sectorSize))
	}
	out, err := exec.Command("losetup", append(args, backing)...).CombinedOutput()
	if err != nil {
		t.Fatalf("cannot attach a loop device (the tests need root and losetup): %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

func TestConformance(t *testing.T) {
	t.Run("RegularFile", func(t *testing.T) {
		bdevtest.Run(t, func(t *testing.T) bdev.Device {
			return mustOpen(t, sparsePath(t, testSize), file.Options{})
		})
	})
	t.Run("RegularFile4K", func(t *testing.T) {
		bdevtest.Run(t, func(t *testing.T) bdev.Device {
			return mustOpen(t, sparsePath(t, testSize), file.Options{BlockSize: 4096})
		})
	})
	t.Run("RegularFileDirect", func(t *testing.T) {
		bdevtest.Run(t, func(t *testing.T) bdev.Device {
			return openDirect(t, sparsePath(t, testSize), file.Options{})
		})
	})
	t.Run("BlockDevice", func(t *testing.T) {
		bdevtest.Run(t, func(t *testing.T) bdev.Device {
			return mustOpen(t, loopDevice(t, testSize, 512), file.Options{})
		})
	})
	t.Run("BlockDeviceDirect", func(t *testing.T) {
		bdevtest.Run(t, func(t *testing.T) bdev.Device {
			return openDirect(t, loopDevice(t, testSize, 512), file.Options{})
		})
	})
}

func TestOpenDescribesRegularFile(t *testing.T) {
	id := uuid.New()
	path := sparsePath(t, testSize+100) // a partial block at the end is ignored
	d := mustOpen(t, path, file.Options{UUID: id})
	want := bdev.Info{Name: "AIO0", UUID: id, ProductName: "AIO disk", BlockSize: 512, NumBlocks: testSize / 512,
		Abilities: bdev.Abilities{Discard: true, WriteZeroes: true, ZeroesOnDiscard: true}}
	if d.Info() != want {
		t.Fatalf("Info = %+v, want %+v", d.Info(), want)
	}
	if d.Path() != path || d.ReadOnly() || d.IsBlockDevice() {
		t.Fatalf("Path=%q ReadOnly=%v IsBlockDevice=%v", d.Path(), d.ReadOnly(), d.IsBlockDevice())
	}
	d.Close()
	if d2 := mustOpen(t, path, file.Options{}); d2.Info().UUID == uuid.Nil || d2.Info().UUID == id {
		t.Fatalf("nil UUID option gave %v", d2.Info().UUID)
	}
}

func TestOpenBlockDevice(t *testing.T) {
	for _, sector := range []int{512, 4096} {
		t.Run(fmt.Sprint(sector), func(t *testing.T) {
			dev := loopDevice(t, testSize, sector)
			d := mustOpen(t, dev, file.Options{})
			if got := d.Info(); got.BlockSize != uint32(sector) || got.NumBlocks != uint64(testSize/sector) {
				t.Fatalf("block size %d, %d blocks; want %d, %d", got.BlockSize, got.NumBlocks, sector, testSize/sector)
			}
			if a := d.Info().Abilities; !d.IsBlockDevice() || !a.Discard || !a.WriteZeroes || a.ZeroesOnDiscard {
				t.Fatalf("block device: IsBlockDevice %v, abilities %+v; want a loop device to discard, not to zeroes, and write zeroes", d.IsBlockDevice(), a)
			}
			if sector == 4096 {
				d.Close()
				if _, err := file.Open("x", dev, file.Options{BlockSize: 512}); !errors.Is(err, bdev.ErrInvalidIO) {
					t.Fatalf("block size below the logical block size: %v, want ErrInvalidIO", err)
				}
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		opts file.Options
		want error
	}{
		{"missing file", filepath.Join(dir, "missing"), file.Options{}, os.ErrNotExist},
		{"directory", dir, file.Options{}, bdev.ErrInvalidIO},
		{"directory read-only", dir, file.Options{ReadOnly: true}, bdev.ErrInvalidIO},
		{"smaller than a block", small, file.Options{}, bdev.ErrInvalidIO},
		{"block size not a sector multiple", sparsePath(t, testSize), file.Options{BlockSize: 1000}, bdev.ErrInvalidIO},
		{"create read-only", filepath.Join(dir, "new"), file.Options{Create: true, Size: testSize, ReadOnly: true}, bdev.ErrInvalidIO},
		{"create without size", filepath.Join(dir, "new2"), file.Options{Create: true}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := file.Open("AIO0", tc.path, tc.opts)
			if err == nil {
				d.Close()
				t.Fatal("Open succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), `"AIO0"`) {
				t.Errorf("error %q does not name the device", err)
			}
		})
	}
}

func TestCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.img")
	d := mustOpen(t, path, file.Options{Create: true, Size: 8 << 20})
	if d.Info().SizeBytes() != 8<<20 {
		t.Fatalf("size %d", d.Info().SizeBytes())
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 >= 8<<20 {
		t.Fatalf("created file is not sparse: %d bytes allocated", st.Blocks*512)
	}
	bdevtest.MustWrite(t, d, bdevtest.Pattern(1, 4096), 0, true)
	d.Close()
	// Create on an existing file opens it unchanged.
	d2 := mustOpen(t, path, file.Options{Create: true, Size: 1 << 20})
	if d2.Info().SizeBytes() != 8<<20 {
		t.Fatalf("existing file resized to %d", d2.Info().SizeBytes())
	}
	if got := bdevtest.MustRead(t, d2, 0, 4096); !bytes.Equal(got, bdevtest.Pattern(1, 4096)) {
		t.Fatal("existing file's data lost")
	}
	if err := file.CreateSparse(path, 1<<20); !errors.Is(err, os.ErrExist) {
		t.Fatalf("CreateSparse over an existing file = %v, want ErrExist", err)
	}
	if err := file.CreateSparse(filepath.Join(t.TempDir(), "x"), 0); err == nil {
		t.Fatal("CreateSparse of size 0 succeeded")
	}
}

func TestDataReachesTheFile(t *testing.T) {
	path := sparsePath(t, testSize)
	d := mustOpen(t, path, file.Options{})
	p := bdevtest.Pattern(2, 8192)
	bdevtest.MustWrite(t, d, p, 4096, false)
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw[4096:4096+8192], p) || !bytes.Equal(raw[:4096], make([]byte, 4096)) {
		t.Fatal("file contents differ from what was written")
	}
}

func TestDiscardPunchesHole(t *testing.T) {
	path := sparsePath(t, testSize)
	d := mustOpen(t, path, file.Options{})
	bdevtest.MustWrite(t, d, bdevtest.Pattern(3, 256<<10), 0, true)
	allocated := func() int64 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	before := allocated()
	if err := d.Discard(0, 256<<10); err != nil {
		t.Fatal(err)
	}
	if after := allocated(); after >= before {
		t.Fatalf("discard freed nothing: %d bytes allocated before, %d after", before, after)
	}
	if got := bdevtest.MustRead(t, d, 0, 256<<10); !bytes.Equal(got, make([]byte, 256<<10)) {
		t.Fatal("discarded range does not read as zeroes")
	}
}

func TestReadOnly(t *testing.T) {
	path := sparsePath(t, testSize)
	rw := mustOpen(t, path, file.Options{})
	bdevtest.MustWrite(t, rw, bdevtest.Pattern(4, 512), 0, true)
	rw.Close()
	d := mustOpen(t, path, file.Options{ReadOnly: true})
	if !d.ReadOnly() {
		t.Fatal("ReadOnly() = false")
	}
	if got := bdevtest.MustRead(t, d, 0, 512); !bytes.Equal(got, bdevtest.Pattern(4, 512)) {
		t.Fatal("read-only device reads wrong data")
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("Flush on read-only device: %v", err)
	}
	for name, err := range map[string]error{
		"write":        d.WriteAt(make([]byte, 512), 0, false),
		"fua write":    d.WriteAt(make([]byte, 512), 0, true),
		"discard":      d.Discard(0, 512),
		"write-zeroes": d.WriteZeroes(0, 512),
	} {
		var ioErr *bdev.IOError
		if !errors.As(err, &ioErr) || !errors.Is(err, syscall.EROFS) || bdev.Errno(err) != syscall.EROFS {
			t.Errorf("%s: %v, want an IOError wrapping EROFS", name, err)
		}
		if !strings.Contains(fmt.Sprint(err), "read-only") {
			t.Errorf("%s: error %q does not say read-only", name, err)
		}
	}
	if got := bdevtest.MustRead(t, d, 0, 512); !bytes.Equal(got, bdevtest.Pattern(4, 512)) {
		t.Fatal("a rejected write changed the data")
	}
}

// TestDirectUnalignedBuffers passes buffers that are not page aligned, and
// larger than one bounce buffer, to an O_DIRECT device.
func TestDirectUnalignedBuffers(t *testing.T) {
	path := sparsePath(t, 4<<20)
	d := openDirect(t, path, file.Options{})
	for _, n := range []int{512, 4096, 64 << 10, 3<<20 - 4096} {
		n = n / int(d.Info().BlockSize) * int(d.Info().BlockSize)
		src := append(make([]byte, 0, n+1), 0)
		src = append(src, bdevtest.Pattern(uint64(n), n)...)[1:] // one byte past an aligned start
		bdevtest.MustWrite(t, d, src, 4096, n%2 == 0)
		dst := make([]byte, n+3)[3:]
		if err := d.ReadAt(dst, 4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dst, src) {
			t.Fatalf("%d bytes through unaligned buffers came back different", n)
		}
	}
}

// TestCloseWaitsForInFlightIO closes the device while IO runs: each IO must
// either succeed or fail with ErrClosed, never hit a closed or reused fd.
func TestCloseWaitsForInFlightIO(t *testing.T) {
	d := mustOpen(t, sparsePath(t, testSize), file.Options{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			p := make([]byte, 64<<10)
			for {
				var err error
				if i%2 == 0 {
					err = d.ReadAt(p, 0)
				} else {
					err = d.WriteAt(p, 64<<10, false)
				}
				if errors.Is(err, bdev.ErrClosed) {
					var ioErr *bdev.IOError
					if !errors.As(err, &ioErr) {
						t.Errorf("ErrClosed not inside an IOError: %v", err)
					}
					return
				}
				if err != nil {
					t.Errorf("IO during Close: %v", err)
					return
				}
			}
		})
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}
