package file_test

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/file"
)

func TestConformanceUring(t *testing.T) {
	t.Run("RegularFileDirect", func(t *testing.T) {
		bdevtest.Run(t, func(t *testing.T) bdev.Device {
			return openDirect(t, sparsePath(t, testSize), file.Options{Engine: file.EngineUring})
		})
	})
	t.Run("RegularFileBuffered4K", func(t *testing.T) {
		bdevtest.Run(t, func(t *testing.T) bdev.Device {
			return mustOpen(t, sparsePath(t, testSize), file.Options{Engine: file.EngineUring, BlockSize: 4096})
		})
	})
	t.Run("BlockDeviceDirect", func(t *testing.T) {
		bdevtest.Run(t, func(t *testing.T) bdev.Device {
			return openDirect(t, loopDevice(t, testSize, 512), file.Options{Engine: file.EngineUring})
		})
	})
}

// TestUringProductName: a device on a ring reports SPDK's uring bdev
// product name, one on system calls the aio bdev's.
func TestUringProductName(t *testing.T) {
	for engine, want := range map[file.Engine]string{file.EngineSync: file.ProductName, file.EngineUring: file.UringProductName} {
		d := openDirect(t, sparsePath(t, testSize), file.Options{Engine: engine})
		if got := d.Info().ProductName; got != want {
			t.Errorf("engine %v: product name %q, want %q", engine, got, want)
		}
	}
	if _, err := file.Open("X", sparsePath(t, testSize), file.Options{Engine: 7}); err == nil {
		t.Fatal("an unknown engine was accepted")
	}
}

// TestUringMatchesSync: goroutines apply the same random operations
// (writes with and without FUA, from aligned and unaligned buffers,
// reads, flushes, discards, write-zeroes) to a device on a ring of depth
// 4 and to one on system calls, each goroutine on blocks of its own; every
// read must agree between the two, and so must the whole devices at the
// end.
func TestUringMatchesSync(t *testing.T) {
	const workers, blockBytes = 8, 4096
	ring := openDirect(t, sparsePath(t, testSize), file.Options{Engine: file.EngineUring, QueueDepth: 4})
	sync_ := openDirect(t, sparsePath(t, testSize), file.Options{})
	devs := [2]*file.Device{ring, sync_}
	blocks := int(testSize / blockBytes)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			raw := make([]byte, 2*blockBytes+1)
			for op := range 150 {
				blk := rng.IntN(blocks/workers)*workers + w
				off := int64(blk) * blockBytes
				p := raw[:blockBytes]
				if rng.IntN(2) == 0 {
					p = raw[1 : 1+blockBytes] // unaligned: through a bounce buffer
				}
				var res [2]string
				kind := rng.IntN(6)
				for i, d := range devs {
					var err error
					switch kind {
					case 0, 1:
						copy(p, bdevtest.Pattern(seed+uint64(op)*workers+uint64(w), blockBytes))
						err = d.WriteAt(p, off, rng.IntN(3) == 0)
					case 2, 3:
						clear(p)
						err = d.ReadAt(p, off)
						res[i] = fmt.Sprintf("%x", p[:8])
						if err == nil {
							res[i] += fmt.Sprintf(" crc %d", crc32.ChecksumIEEE(p))
						}
					case 4:
						if rng.IntN(2) == 0 {
							err = d.Discard(off, blockBytes)
						} else {
							err = d.WriteZeroes(off, blockBytes)
						}
					default:
						err = d.Flush()
					}
					res[i] += fmt.Sprint(" ", err)
				}
				if res[0] != res[1] {
					errs <- fmt.Errorf("worker %d op %d (kind %d, block %d): ring %q, sync %q", w, op, kind, blk, res[0], res[1])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	a, b := bdevtest.MustRead(t, ring, 0, testSize), bdevtest.MustRead(t, sync_, 0, testSize)
	if !bytes.Equal(a, b) {
		t.Fatalf("the devices differ after the run (seed %d)", seed)
	}
}

// TestOpenUringWaitsForRelease: a file whose lock is held by an open file
// description that no process has open (here one in flight in a Unix
// socket, as a killed process's is held by its ring's requests) is
// opened by OpenUring once that description goes; a file another device
// holds is refused at once.
func TestOpenUringWaitsForRelease(t *testing.T) {
	path := sparsePath(t, testSize)
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendmsg(sp[0], []byte{1}, unix.UnixRights(fd), nil, 0); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	const hold = 200 * time.Millisecond
	go func() {
		time.Sleep(hold)
		unix.Close(sp[1]) // drops the description in flight, and its lock
		unix.Close(sp[0])
	}()
	start := time.Now()
	d, err := file.OpenUring("U0", path, file.Options{Direct: true})
	if err != nil {
		t.Fatalf("OpenUring after the holder-less lock went: %v", err)
	}
	defer d.Close()
	if waited := time.Since(start); waited < hold/2 {
		t.Fatalf("OpenUring succeeded after %v, while the lock was still held", waited)
	}
	start = time.Now()
	if _, err := file.OpenUring("U1", path, file.Options{Direct: true}); !errors.Is(err, file.ErrInUse) || time.Since(start) > time.Second {
		t.Fatalf("OpenUring of a file a device holds: %v after %v, want ErrInUse at once", err, time.Since(start))
	}
}
