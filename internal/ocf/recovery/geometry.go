package recovery

import (
	"fmt"
	"strings"

	"blockcache/internal/ocf/metadata"
)

// lineSizes are the supported line sizes, in bytes.
var lineSizes = []int64{4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10}

// deriveGeometry finds the line size of a cache whose superblocks are lost
// from its entry area: a cache initialises every entry sector of its
// geometry, and each line size gives a device its own number of entry
// sectors, so the line size is the one whose entry area ends right after
// the last intact sector of the cache. It fails with ErrGeometry when no
// line size, or more than one, fits; the caller then has to be told the
// line size.
func deriveGeometry(devBytes, lastSector int64) (metadata.Geometry, error) {
	var fits []metadata.Geometry
	var all []string
	for _, ls := range lineSizes {
		g := metadata.ComputeGeometry(devBytes, ls)
		all = append(all, fmt.Sprintf("%d KiB lines: %d", ls>>10, g.EntrySectors))
		if g.NumLines > 0 && g.EntrySectors == lastSector+1 {
			fits = append(fits, g)
		}
	}
	switch len(fits) {
	case 1:
		return fits[0], nil
	case 0:
		return metadata.Geometry{}, fmt.Errorf("%w: the cache's intact entry sectors end at sector %d, and no line size gives a %d-byte device an entry area of %d sectors (%s); the last entry sectors may be damaged: give the line size",
			ErrGeometry, lastSector, devBytes, lastSector+1, strings.Join(all, ", "))
	}
	var sizes []string
	for _, g := range fits {
		sizes = append(sizes, fmt.Sprintf("%d KiB", g.LineSize>>10))
	}
	return metadata.Geometry{}, fmt.Errorf("%w: line sizes %s all give this %d-byte device %d entry sectors: give the line size",
		ErrGeometry, strings.Join(sizes, " and "), devBytes, lastSector+1)
}

// givenGeometry is the geometry of lineSize bytes on devBytes, checked
// against the superblock when there is one.
func givenGeometry(devBytes, lineSize int64, sb *metadata.Superblock) (metadata.Geometry, error) {
	valid := false
	for _, ls := range lineSizes {
		valid = valid || ls == lineSize
	}
	if !valid {
		return metadata.Geometry{}, fmt.Errorf("%w: line size %d bytes (want 4, 8, 16, 32 or 64 KiB)", ErrGeometry, lineSize)
	}
	if sb != nil && sb.Geometry.LineSize != lineSize {
		return metadata.Geometry{}, fmt.Errorf("%w: the superblock records %d KiB lines, not %d KiB", ErrGeometry, sb.Geometry.LineSize>>10, lineSize>>10)
	}
	g := metadata.ComputeGeometry(devBytes, lineSize)
	if g.NumLines == 0 {
		return metadata.Geometry{}, fmt.Errorf("%w: a %d-byte device holds no %d KiB line", ErrGeometry, devBytes, lineSize>>10)
	}
	return g, nil
}
