// Package config reads the legacy INI configuration of older SPDK releases
// (SPDK's OCF vbdev's [OCF] section and the [Malloc] and [AIO] base
// sections) and turns it into the JSON-RPC calls that build the same
// devices.
package config

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Call is one JSON-RPC method call with its params.
type Call struct {
	Method string
	Params map[string]any
}

// ParseINI reads a legacy INI config and returns the calls that build it:
// base bdevs first, in file order, then the OCF vbdevs. name is used in
// error messages, which name the line:
//
//	[Malloc]
//	  NumberOfLuns 2        # Malloc0, Malloc1
//	  LunSizeInMB 64
//	  BlockSize 512         # optional, default 512
//	[AIO]
//	  AIO /path/to/file AIO0 [block_size]
//	[OCF]
//	  OCF <name> <mode> <cache_line_size_KiB> <cache_bdev> <core_bdev>
//
// Other sections are ignored with no error, as SPDK did for modules it did
// not have.
func ParseINI(name string, r io.Reader) ([]Call, error) {
	var bases, ocf []Call
	var section string
	malloc := map[string]string{}
	mallocLine := 0
	sc := bufio.NewScanner(r)
	lineNo := 0
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s", name, lineNo, fmt.Sprintf(format, args...))
	}
	flushMalloc := func() error {
		if section != "Malloc" {
			return nil
		}
		n, size, bs := malloc["NumberOfLuns"], malloc["LunSizeInMB"], malloc["BlockSize"]
		if n == "" && size == "" {
			return nil
		}
		count, err := strconv.Atoi(n)
		if err != nil || count < 1 {
			return fmt.Errorf("%s:%d: [Malloc] NumberOfLuns %q: want a positive number", name, mallocLine, n)
		}
		mib, err := strconv.ParseUint(size, 10, 32)
		if err != nil || mib == 0 {
			return fmt.Errorf("%s:%d: [Malloc] LunSizeInMB %q: want a positive number", name, mallocLine, size)
		}
		blockSize := uint64(512)
		if bs != "" {
			if blockSize, err = strconv.ParseUint(bs, 10, 32); err != nil || blockSize == 0 || blockSize%512 != 0 {
				return fmt.Errorf("%s:%d: [Malloc] BlockSize %q: want a multiple of 512", name, mallocLine, bs)
			}
		}
		for i := range count {
			bases = append(bases, Call{Method: "bdev_malloc_create", Params: map[string]any{
				"name": fmt.Sprintf("Malloc%d", i), "num_blocks": mib << 20 / blockSize, "block_size": blockSize,
			}})
		}
		clear(malloc)
		return nil
	}
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") {
				return nil, fail("section header %q is not closed", line)
			}
			if err := flushMalloc(); err != nil {
				return nil, err
			}
			section = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		f := strings.Fields(line)
		switch section {
		case "":
			return nil, fail("%q outside any section", line)
		case "Malloc":
			switch f[0] {
			case "NumberOfLuns", "LunSizeInMB", "BlockSize":
				if len(f) != 2 {
					return nil, fail("[Malloc] %s takes one value", f[0])
				}
				malloc[f[0]] = f[1]
				mallocLine = lineNo
			default:
				return nil, fail("[Malloc] unknown key %q (want NumberOfLuns, LunSizeInMB, BlockSize)", f[0])
			}
		case "AIO":
			if f[0] != "AIO" || len(f) < 3 || len(f) > 4 {
				return nil, fail("[AIO] want `AIO <file> <name> [block_size]`, got %q", line)
			}
			p := map[string]any{"filename": f[1], "name": f[2]}
			if len(f) == 4 {
				bs, err := strconv.ParseUint(f[3], 10, 32)
				if err != nil || bs == 0 || bs%512 != 0 {
					return nil, fail("[AIO] block size %q: want a multiple of 512", f[3])
				}
				p["block_size"] = bs
			}
			bases = append(bases, Call{Method: "bdev_aio_create", Params: p})
		case "OCF":
			if f[0] != "OCF" || len(f) != 6 {
				return nil, fail("[OCF] want `OCF <name> <mode> <cache_line_size_KiB> <cache_bdev> <core_bdev>`, got %q", line)
			}
			ls, err := strconv.ParseUint(f[3], 10, 64)
			if err != nil {
				return nil, fail("[OCF] %s: cache line size %q is not a number", f[1], f[3])
			}
			ocf = append(ocf, Call{Method: "bdev_ocf_create", Params: map[string]any{
				"name": f[1], "mode": f[2], "cache_line_size": ls, "cache_bdev_name": f[4], "core_bdev_name": f[5],
			}})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := flushMalloc(); err != nil {
		return nil, err
	}
	return append(bases, ocf...), nil
}
