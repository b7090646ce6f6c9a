package perf

import (
	"fmt"
	"strconv"
	"strings"
)

// Workload is an IO pattern, named as bdevperf's -w names it.
type Workload uint8

// The workloads. Read, Write, RW and the three data-less ones walk the
// device sequentially; the Rand ones pick uniformly random offsets. RW and
// RandRW mix reads and writes by Job.ReadPercent. Verify writes a pattern
// at each offset and reads it back, comparing.
const (
	Read Workload = iota
	Write
	RandRead
	RandWrite
	RW
	RandRW
	Verify
	Flush
	Unmap
	WriteZeroes
)

var workloadNames = [...]string{
	Read:        "read",
	Write:       "write",
	RandRead:    "randread",
	RandWrite:   "randwrite",
	RW:          "rw",
	RandRW:      "randrw",
	Verify:      "verify",
	Flush:       "flush",
	Unmap:       "unmap",
	WriteZeroes: "write_zeroes",
}

func (w Workload) String() string {
	if int(w) < len(workloadNames) {
		return workloadNames[w]
	}
	return fmt.Sprintf("workload(%d)", uint8(w))
}

// ParseWorkload reads a workload name as bdevperf's -w takes it.
func ParseWorkload(s string) (Workload, error) {
	for w, name := range workloadNames {
		if s == name {
			return Workload(w), nil
		}
	}
	return 0, fmt.Errorf("workload %q: want one of %s: %w", s, strings.Join(workloadNames[:], ", "), ErrInvalidOption)
}

// Random reports whether w picks random offsets.
func (w Workload) Random() bool { return w == RandRead || w == RandWrite || w == RandRW }

// Mixed reports whether w mixes reads and writes by a read percentage.
func (w Workload) Mixed() bool { return w == RW || w == RandRW }

// readPercent is the share of reads w issues, given the -M value for the
// mixed workloads.
func (w Workload) readPercent(mix int) int {
	switch w {
	case Read, RandRead:
		return 100
	case RW, RandRW:
		return mix
	}
	return 0
}

// ParseSize reads an IO size as bdevperf's -o does (SPDK's
// spdk_parse_capacity): a decimal number of bytes, optionally followed by
// k, m or g (either case, binary multiples) and an optional B: "4096",
// "4k", "4K", "4KB", "1m".
func ParseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	digits, suffix := s[:i], s[i:]
	if digits == "" {
		return 0, fmt.Errorf("IO size %q: want a number of bytes such as 4096 or 4k: %w", s, ErrInvalidOption)
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("IO size %q: %w", s, ErrInvalidOption)
	}
	shift := 0
	if suffix != "" {
		switch suffix[0] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		default:
			return 0, fmt.Errorf("IO size %q: unknown unit %q (want k, m or g): %w", s, suffix, ErrInvalidOption)
		}
		if rest := suffix[1:]; rest != "" && rest != "b" && rest != "B" {
			return 0, fmt.Errorf("IO size %q: unknown unit %q (want k, m or g): %w", s, suffix, ErrInvalidOption)
		}
	}
	if n > MaxIOSize>>shift {
		return 0, fmt.Errorf("IO size %q: more than the %d bytes allowed: %w", s, MaxIOSize, ErrInvalidOption)
	}
	n <<= shift
	if n <= 0 {
		return 0, fmt.Errorf("IO size %q: must be positive: %w", s, ErrInvalidOption)
	}
	return n, nil
}

// MaxIOSize bounds an IO's size: 128 MiB, far beyond any useful benchmark,
// so that a typo cannot make every queue slot allocate gigabytes.
const MaxIOSize = 128 << 20

// MaxQueueDepth bounds a job's queue depth (one goroutine and one buffer
// per slot).
const MaxQueueDepth = 4096
