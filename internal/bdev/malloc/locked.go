//go:build !amd64 || race

package malloc

// optimisticReads is off: see optimistic.go.
const optimisticReads = false
