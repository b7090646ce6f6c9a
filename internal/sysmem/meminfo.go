package sysmem

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// memAvailable reads MemAvailable from /proc/meminfo (kernels since 3.14).
// On older kernels it falls back to MemFree + Buffers + Cached, which
// overstates what can be had by the part of the cache that cannot be
// dropped.
func (p Probe) memAvailable() (Available, error) {
	const path = "/proc/meminfo"
	b, err := os.ReadFile(p.path(path))
	if err != nil {
		return Available{}, fmt.Errorf("sysmem: %w", err)
	}
	fields := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// "MemAvailable:   24283788 kB"
		name, rest, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil || n < 0 {
			return Available{}, fmt.Errorf("sysmem: %s: %s: bad value %q", path, name, f[0])
		}
		if len(f) > 1 && string(f[1]) == "kB" {
			n *= 1024
		}
		fields[string(name)] = n
	}
	if n, ok := fields["MemAvailable"]; ok {
		return Available{Bytes: n, Source: "MemAvailable in " + path}, nil
	}
	free, ok1 := fields["MemFree"]
	buffers, ok2 := fields["Buffers"]
	cached, ok3 := fields["Cached"]
	if !ok1 || !ok2 || !ok3 {
		return Available{}, fmt.Errorf("sysmem: %s has neither MemAvailable nor MemFree, Buffers and Cached", path)
	}
	return Available{Bytes: free + buffers + cached, Source: "MemFree+Buffers+Cached in " + path}, nil
}
