package file

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxHolders bounds how many holders a busy error names.
const maxHolders = 4

// lockHolders names the processes that hold a lock on the file with device
// dev and inode ino, e.g. "blockcache pid 1234", or returns "" when it finds
// none. F_OFD_GETLK cannot tell (it reports pid -1 for open file
// description locks), so it looks through /proc for file descriptors open
// on that file whose fdinfo lists a lock ("lock:" lines, held locks only,
// not "->" waiters). Processes it may not look into are passed over. It runs
// only when an open was refused, so its cost (a stat per open fd on the
// machine) does not matter.
func lockHolders(dev, ino uint64) string {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return ""
	}
	self := os.Getpid()
	var names []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || !holdsLock(pid, dev, ino) {
			continue
		}
		name := fmt.Sprintf("%s pid %d", processName(pid), pid)
		if pid == self {
			name += " (this process)"
		}
		if names = append(names, name); len(names) == maxHolders {
			break
		}
	}
	return strings.Join(names, ", ")
}

// holdsLock reports whether process pid has a file descriptor open on the
// file dev/ino that holds a lock on it.
func holdsLock(pid int, dev, ino uint64) bool {
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd/"
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		var st unix.Stat_t
		if unix.Stat(fdDir+fd.Name(), &st) != nil || st.Dev != dev || st.Ino != ino {
			continue
		}
		info, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/fdinfo/" + fd.Name())
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(info)) {
			if strings.HasPrefix(line, "lock:") && !strings.Contains(line, "->") {
				return true
			}
		}
	}
	return false
}

// processName is the command name of process pid, or "process" when it
// cannot be read.
func processName(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if name := strings.TrimSpace(string(b)); err == nil && name != "" {
		return name
	}
	return "process"
}
