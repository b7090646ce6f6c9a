package malloc_test

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/malloc"
)

func TestConformance(t *testing.T) {
	for _, bs := range []uint32{512, 4096, 1536} {
		t.Run(fmt.Sprint(bs), func(t *testing.T) {
			bdevtest.Run(t, func(t *testing.T) bdev.Device {
				d, err := malloc.New("Malloc0", uuid.Nil, bs, 32)
				if err != nil {
					t.Fatal(err)
				}
				return d
			})
		})
	}
}

func TestNew(t *testing.T) {
	id := uuid.New()
	tests := []struct {
		name      string
		blockSize uint32
		numBlocks uint64
		ok        bool
	}{
		{"512", 512, 1, true},
		{"4096", 4096, 8, true},
		{"zero block size", 0, 8, false},
		{"block size not a sector multiple", 1000, 8, false},
		{"block size below a sector", 256, 8, false},
		{"zero blocks", 512, 0, false},
		{"2^55 blocks wrap to 0 bytes", 512, 1 << 55, false},
		{"one block past int64", 4096, 1<<63/4096 + 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := malloc.New("m", id, tc.blockSize, tc.numBlocks)
			if !tc.ok {
				if !errors.Is(err, bdev.ErrInvalidIO) {
					t.Fatalf("New = %v, want ErrInvalidIO", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			want := bdev.Info{Name: "m", UUID: id, ProductName: "Malloc disk", BlockSize: tc.blockSize, NumBlocks: tc.numBlocks,
				Abilities: bdev.Abilities{Discard: true, WriteZeroes: true, ZeroesOnDiscard: true}}
			if d.Info() != want {
				t.Fatalf("Info = %+v, want %+v", d.Info(), want)
			}
			if got := bdevtest.MustRead(t, d, 0, int(d.Info().SizeBytes())); !bytes.Equal(got, make([]byte, len(got))) {
				t.Fatal("new device is not zero-filled")
			}
		})
	}
}

func TestNilUUIDGetsRandomOne(t *testing.T) {
	a, _ := malloc.New("a", uuid.Nil, 512, 1)
	b, _ := malloc.New("b", uuid.Nil, 512, 1)
	if a.Info().UUID == uuid.Nil || a.Info().UUID == b.Info().UUID {
		t.Fatalf("UUIDs %v and %v: want distinct non-nil", a.Info().UUID, b.Info().UUID)
	}
}

func TestAbilities(t *testing.T) {
	d, _ := malloc.New("m", uuid.Nil, 512, 16)
	if d.Info().Abilities != (bdev.Abilities{Discard: true, WriteZeroes: true, ZeroesOnDiscard: true}) {
		t.Fatal("malloc must discard (to zeroes) and write zeroes")
	}
}

// TestReadsNeverSeeTornBlocks races readers against writers that fill whole
// ranges with one byte each; every block a reader sees must be uniform. Run
// without the race detector it checks the optimistic reads (readChunk).
func TestReadsNeverSeeTornBlocks(t *testing.T) {
	for _, tc := range []struct {
		bs, blocks, writeBlocks int
	}{
		{512, 64, 16}, // writes and reads across chunks
		{4096, 4, 4},  // one chunk, rewritten whole: the most races per read
		{4096, 16, 1}, // single blocks
	} {
		t.Run(fmt.Sprintf("%dx%d", tc.bs, tc.blocks), func(t *testing.T) {
			d, _ := malloc.New("m", uuid.Nil, uint32(tc.bs), uint64(tc.blocks))
			defer d.Close()
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for w := range 2 {
				wg.Go(func() {
					p := bytes.Repeat([]byte{byte(w + 1)}, tc.writeBlocks*tc.bs)
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						at := (i*7 + w) % (tc.blocks - tc.writeBlocks + 1)
						if err := d.WriteAt(p, int64(at*tc.bs), false); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			defer wg.Wait()
			defer close(stop)
			p := make([]byte, tc.blocks*tc.bs)
			for deadline := time.Now().Add(150 * time.Millisecond); time.Now().Before(deadline); {
				if err := d.ReadAt(p, 0); err != nil {
					t.Fatal(err)
				}
				for b := range tc.blocks {
					blk := p[b*tc.bs : (b+1)*tc.bs]
					if !bytes.Equal(blk, bytes.Repeat(blk[:1], tc.bs)) {
						t.Fatalf("block %d torn", b)
					}
				}
			}
		})
	}
}

// TestCloseWaitsForInFlightIO checks that Close does not free the memory
// under an IO that already started: every IO either completes or fails with
// ErrClosed.
func TestCloseWaitsForInFlightIO(t *testing.T) {
	d, _ := malloc.New("m", uuid.Nil, 4096, 256)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			p := make([]byte, 256*4096)
			for {
				err := d.ReadAt(p, 0)
				if errors.Is(err, bdev.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
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

func BenchmarkMallocRead4K(b *testing.B) {
	d, err := malloc.New("m", uuid.Nil, 512, 1<<15) // 16 MiB
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	p := make([]byte, 4096)
	const span = 1 << 12 // 4 KiB slots in the device
	b.ReportAllocs()
	b.SetBytes(4096)
	for i := 0; b.Loop(); i++ {
		if err := d.ReadAt(p, int64(i%span)*4096); err != nil {
			b.Fatal(err)
		}
	}
}
