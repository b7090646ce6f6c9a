package aligned

import "testing"

func TestBytesAligned(t *testing.T) {
	for _, align := range []int{512, Page, 64 << 10} {
		for _, n := range []int{1, 100, 511, 512, 4095, 4096, 12288, 1 << 20, 3<<20 + 512} {
			b := Bytes(n, align)
			if len(b) != n || cap(b) != n {
				t.Fatalf("Bytes(%d, %d): len %d cap %d", n, align, len(b), cap(b))
			}
			if !Is(b, align) {
				t.Fatalf("Bytes(%d, %d) starts at %p", n, align, &b[0])
			}
			for i, c := range b {
				if c != 0 {
					t.Fatalf("Bytes(%d, %d)[%d] = %d, not zero", n, align, i, c)
				}
			}
		}
	}
}

func TestIs(t *testing.T) {
	b := Bytes(2*Page, Page)
	if !Is(b, Page) || Is(b[1:], 2) || Is(b[512:], Page) || !Is(b[512:], 512) || !Is(nil, Page) {
		t.Fatal("Is disagrees with the offsets it was given")
	}
}

func TestBytesBadAlignPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Bytes(8, 3) did not panic")
		}
	}()
	Bytes(8, 3)
}
