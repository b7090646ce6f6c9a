// Package cpumask parses SPDK's reactor mask (spdk_tgt -m) and pins the
// running process to it, as an SPDK target pins its reactors.
package cpumask

import (
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
const maxCPUs = len(unix.CPUSet{}) * 64

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

// Pin makes the process run on the CPUs of set only, and sizes the Go
// scheduler to them (GOMAXPROCS), as SPDK runs one reactor per CPU of its
// mask. Every CPU of set must be one the process may use now.
//
// Affinity belongs to each thread, and a new thread inherits its creator's.
// Setting it on the threads the runtime has already started could miss one
// being created meanwhile, so Pin sets it on the calling thread only and
// re-executes the program from there (the same process id, arguments and
// environment): every thread of the new image descends from that one. In
// the new image the process already runs on set, and Pin returns nil. So
// call it first thing, before the program opens anything; on success in the
// old image it does not return.
func Pin(set unix.CPUSet) error {
	var cur unix.CPUSet
	if err := unix.SchedGetaffinity(0, &cur); err != nil {
		return fmt.Errorf("read the allowed CPUs: %w", err)
	}
	if cur == set {
		runtime.GOMAXPROCS(set.Count())
		return nil
	}
	for c := 0; c < maxCPUs; c++ {
		if set.IsSet(c) && !cur.IsSet(c) {
			return fmt.Errorf("CPU %d is not available to this process (allowed: %s)", c, String(cur))
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the program to re-execute: %w", err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin to CPUs %s: %w", String(set), err)
	}
	err = unix.Exec(exe, os.Args, os.Environ())
	unix.SchedSetaffinity(0, &cur) //nolint:errcheck // best effort: Exec failed
	return fmt.Errorf("re-execute %s pinned to CPUs %s: %w", exe, String(set), err)
}
