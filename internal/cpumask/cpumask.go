// Package cpumask parses SPDK's reactor mask (spdk_tgt -m) and pins the
// running process to it, as an SPDK target pins its reactors.
package cpumask

import (
	"errors"
	"fmt"
	"math/big"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Parse reads a CPU mask the way SPDK's -m does: a hexadecimal mask
// ("0x3", "3", "0xF0") or a bracketed list of CPUs and ranges ("[0,2-3]").
func Parse(s string) (unix.CPUSet, error) {
	var set unix.CPUSet
	s = strings.TrimSpace(s)
	if list, ok := strings.CutPrefix(s, "["); ok {
		list, ok = strings.CutSuffix(list, "]")
		if !ok {
			return set, fmt.Errorf("cpu mask %q: a list must end with ']'", s)
		}
		for _, item := range strings.Split(list, ",") {
			lo, hi, isRange := strings.Cut(strings.TrimSpace(item), "-")
			first, err := cpuNumber(lo)
			if err != nil {
				return set, fmt.Errorf("cpu mask %q: %w", s, err)
			}
			last := first
			if isRange {
				if last, err = cpuNumber(hi); err != nil {
					return set, fmt.Errorf("cpu mask %q: %w", s, err)
				}
				if last < first {
					return set, fmt.Errorf("cpu mask %q: range %s runs backwards", s, item)
				}
			}
			for c := first; c <= last; c++ {
				set.Set(c)
			}
		}
	} else {
		hex := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
		mask, ok := new(big.Int).SetString(hex, 16)
		if hex == "" || !ok || strings.HasPrefix(hex, "+") || strings.HasPrefix(hex, "-") {
			return set, fmt.Errorf("cpu mask %q: want a hexadecimal mask (0x3) or a list ([0,2-3])", s)
		}
		if mask.BitLen() > maxCPUs {
			return set, fmt.Errorf("cpu mask %q: CPU %d is beyond the %d this build handles", s, mask.BitLen()-1, maxCPUs)
		}
		for c := range mask.BitLen() {
			if mask.Bit(c) == 1 {
				set.Set(c)
			}
		}
	}
	if set.Count() == 0 {
		return set, fmt.Errorf("cpu mask %q: no CPU", s)
	}
	return set, nil
}

// maxCPUs is how many CPUs a unix.CPUSet holds.
var maxCPUs = len(unix.CPUSet{}) * 64

func cpuNumber(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a CPU number", s)
	}
	if n >= maxCPUs {
		return 0, fmt.Errorf("CPU %d is beyond the %d this build handles", n, maxCPUs)
	}
	return n, nil
}

// String lists the CPUs of set as ranges, like Linux's Cpus_allowed_list.
func String(set unix.CPUSet) string {
	var parts []string
	for c := 0; c < maxCPUs; c++ {
		if !set.IsSet(c) {
			continue
		}
		end := c
		for end+1 < maxCPUs && set.IsSet(end+1) {
			end++
		}
		if end == c {
			parts = append(parts, strconv.Itoa(c))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", c, end))
		}
		c = end
	}
	return strings.Join(parts, ",")
}

// Pin restricts every thread of the process to the CPUs of set and sizes
// the Go scheduler to them (GOMAXPROCS), as SPDK runs one reactor per CPU of
// its mask. Every CPU of set must be one the process may use now.
func Pin(set unix.CPUSet) error {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return fmt.Errorf("read the allowed CPUs: %w", err)
	}
	for c := 0; c < maxCPUs; c++ {
		if set.IsSet(c) && !allowed.IsSet(c) {
			return fmt.Errorf("CPU %d is not available to this process (allowed: %s)", c, String(allowed))
		}
	}
	// Affinity is per thread, and a new thread inherits its creator's:
	// set it on every thread there is until no unpinned one is left (the
	// runtime may start threads meanwhile).
	pinned := map[int]bool{}
	for {
		tids, err := threads()
		if err != nil {
			return err
		}
		fresh := 0
		for _, tid := range tids {
			if pinned[tid] {
				continue
			}
			fresh++
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("pin thread %d to CPUs %s: %w", tid, String(set), err)
			}
			pinned[tid] = true
		}
		if fresh == 0 {
			break
		}
	}
	runtime.GOMAXPROCS(set.Count())
	return nil
}

// threads lists the process's thread ids.
func threads() ([]int, error) {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("list threads: %w", err)
	}
	tids := make([]int, 0, len(entries))
	for _, e := range entries {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
