package signature

import "testing"

// FuzzDetect: any first bytes of a device are probed without panicking,
// and every signature found has its magic inside them.
func FuzzDetect(f *testing.F) {
	f.Add(make([]byte, ProbeBytes))
	mbr := make([]byte, 1024)
	mbr[510], mbr[511], mbr[446+4] = 0x55, 0xaa, 0x83
	f.Add(mbr)
	f.Add([]byte("XFSB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, s := range Detect(b) {
			if s.Offset < 0 || s.Offset >= int64(len(b)) {
				t.Fatalf("%v: magic at %d, outside the %d bytes probed", s, s.Offset, len(b))
			}
		}
	})
}
