package cpumask

// DefaultProcs is how many Go scheduler slots (GOMAXPROCS) the daemon takes
// when neither -m nor the GOMAXPROCS environment variable says: half of the
// CPUs the process may use, at least one.
//
// An NBD server's clients usually run on the same machine (qemu, fio, a
// backup job over loopback or a Unix socket). With a slot per CPU, the
// runtime keeps idle slots spinning in search of work each time a request
// wakes a goroutine, on exactly the CPUs the clients need: measured on a
// 2-CPU machine, 4 KiB random writes at queue depth 32 took 16-32 us of
// server CPU per IO with 2 slots and 8-12 us with 1, and ran at half the
// rate. Half the CPUs leaves the clients room on any size of machine, as
// SPDK's default reactor mask (one core) does, while a big machine's
// daemon still runs on many. Blocking device IO does not hold a slot, so
// file-backed devices keep their queue depth whatever the count.
func DefaultProcs(available int) int { return max(1, available/2) }
