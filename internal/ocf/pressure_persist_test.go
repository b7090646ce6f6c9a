package ocf_test

import (
	"testing"

	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
)

// TestCleaningParamsPersist: the dirty-ratio target and max_inflight are
// in the superblock and come back with Load; a superblock written before
// they had slots (both 0) loads with the defaults.
func TestCleaningParamsPersist(t *testing.T) {
	e := newPressureEnv(t, 55, 8)
	if err := e.c.RemoveCore(e.co, false); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Stop(); err != nil {
		t.Fatal(err)
	}
	c, _, err := ocf.Load(e.cdev, ocf.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Cleaning(); p.ALRU.MaxDirtyRatio != 55 || p.MaxInflight != 8 {
		t.Fatalf("after load: max_dirty_ratio %d, max_inflight %d; want 55, 8", p.ALRU.MaxDirtyRatio, p.MaxInflight)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}

	// Zero both slots in the newest superblock copy, as older metadata
	// has them.
	size := e.cdev.Info().SizeBytes()
	a, b := make([]byte, metadata.SuperblockCopyBytes), make([]byte, metadata.SuperblockCopyBytes)
	if err := e.cdev.ReadAt(a, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.cdev.ReadAt(b, metadata.SuperblockCopyBytes); err != nil {
		t.Fatal(err)
	}
	sb, _, err := metadata.Newest(a, b, size)
	if err != nil {
		t.Fatal(err)
	}
	const ratioSlot, inflightSlot = 9, 10 // persist.go
	if sb.Params[ratioSlot] != 56 || sb.Params[inflightSlot] != 8 {
		t.Fatalf("superblock slots %d and %d hold %d and %d; want 56 (55%% + 1) and 8", ratioSlot, inflightSlot, sb.Params[ratioSlot], sb.Params[inflightSlot])
	}
	sb.Params[ratioSlot], sb.Params[inflightSlot] = 0, 0
	sb.Seq++
	raw, err := sb.Encode()
	if err != nil {
		t.Fatal(err)
	}
	raw = append(raw, make([]byte, (512-len(raw)%512)%512)...)
	if err := e.cdev.WriteAt(raw, int64(sb.Seq%2)*metadata.SuperblockCopyBytes, true); err != nil {
		t.Fatal(err)
	}
	c, _, err = ocf.Load(e.cdev, ocf.Config{})
	if err != nil {
		t.Fatal(err)
	}
	def := ocf.DefaultCleaningParams()
	if p := c.Cleaning(); p.ALRU.MaxDirtyRatio != def.ALRU.MaxDirtyRatio || p.MaxInflight != def.MaxInflight {
		t.Fatalf("older superblock: max_dirty_ratio %d, max_inflight %d; want the defaults %d, %d",
			p.ALRU.MaxDirtyRatio, p.MaxInflight, def.ALRU.MaxDirtyRatio, def.MaxInflight)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
}
