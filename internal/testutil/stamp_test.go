package testutil

import (
	"bytes"
	"strings"
	"testing"
)

func TestStampRoundTrip(t *testing.T) {
	p := make([]byte, 8*SectorSize)
	Fill(p, Stamp{Run: 7, Space: 2, Sector: 40, Write: 9, Writer: 3})
	for i := range 8 {
		s, err := Check(p[i*SectorSize:], 7, 2, uint64(40+i))
		if err != nil {
			t.Fatalf("sector %d: %v", i, err)
		}
		if want := (Stamp{Run: 7, Space: 2, Sector: uint64(40 + i), Write: 9, Writer: 3}); s != want {
			t.Fatalf("sector %d decodes as %v, want %v", i, s, want)
		}
	}
	if w, err := CheckWhole(p, 7, 2, 40); err != nil || w != 9 {
		t.Fatalf("CheckWhole = %d, %v; want write 9", w, err)
	}
}

func TestStampZeroes(t *testing.T) {
	p := bytes.Repeat([]byte{0xff}, SectorSize)
	Stamp{Sector: 1, Write: 0}.Put(p)
	if !bytes.Equal(p, make([]byte, SectorSize)) {
		t.Fatal("write 0 is not zeroes")
	}
	if s, err := Check(p, 1, 1, 1); err != nil || s != (Stamp{}) {
		t.Fatalf("zeroes decode as %v, %v; want the zero Stamp", s, err)
	}
}

// TestStampRejects: each way a sector can be wrong is told apart.
func TestStampRejects(t *testing.T) {
	good := make([]byte, 2*SectorSize)
	Fill(good, Stamp{Run: 1, Space: 0, Sector: 10, Write: 5})
	other := make([]byte, 2*SectorSize)
	Fill(other, Stamp{Run: 1, Space: 0, Sector: 10, Write: 6})
	for _, tc := range []struct {
		name string
		p    func() []byte
		want string
	}{
		{"garbage", func() []byte { return bytes.Repeat([]byte{1}, SectorSize) }, "no stamp"},
		{"torn", func() []byte { p := bytes.Clone(good[:SectorSize]); p[300] ^= 1; return p }, "torn or corrupt: bytes 300.."},
		{"misplaced", func() []byte { return good[SectorSize:] }, "sector 10 holds the data of space 0 sector 11"},
		{"foreign", func() []byte {
			p := make([]byte, SectorSize)
			Stamp{Run: 2, Sector: 10, Write: 5}.Put(p)
			return p
		}, "from run 0x2, not 0x1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(tc.p(), 1, 0, 10)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want an error saying %q", err, tc.want)
			}
		})
	}
	mixed := append(bytes.Clone(good[:SectorSize]), other[SectorSize:]...)
	if _, err := CheckWhole(mixed, 1, 0, 10); err == nil || !strings.Contains(err.Error(), "torn: sector 10 holds write 5, sector 11 write 6") {
		t.Fatalf("CheckWhole of two writes = %v, want torn", err)
	}
}

// TestStampsDiffer: stamps differing in any one field differ in content.
func TestStampsDiffer(t *testing.T) {
	base := Stamp{Run: 1, Space: 1, Sector: 1, Write: 1, Writer: 1}
	variants := []Stamp{base, base, base, base, base}
	variants[0].Run++
	variants[1].Space++
	variants[2].Sector++
	variants[3].Write++
	variants[4].Writer++
	a := make([]byte, SectorSize)
	base.Put(a)
	for _, v := range variants {
		b := make([]byte, SectorSize)
		v.Put(b)
		if bytes.Equal(a[stampHeader:], b[stampHeader:]) {
			t.Fatalf("%v and %v have the same filler", base, v)
		}
	}
}

// FuzzRead: Read never panics, and a sector it accepts is exactly the
// stamp it names.
func FuzzRead(f *testing.F) {
	p := make([]byte, SectorSize)
	Stamp{Run: 3, Space: 1, Sector: 2, Write: 4, Writer: 5}.Put(p)
	f.Add(p)
	f.Add(make([]byte, SectorSize))
	f.Add([]byte(stampMagic + strings.Repeat("x", SectorSize-4)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < SectorSize {
			b = append(b, make([]byte, SectorSize-len(b))...)
		}
		s, err := Read(b)
		if err != nil {
			return
		}
		want := make([]byte, SectorSize)
		s.Put(want)
		if !bytes.Equal(b[:SectorSize], want) {
			t.Fatalf("Read accepted a sector that is not the stamp of %v", s)
		}
	})
}
