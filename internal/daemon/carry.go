package daemon

import (
	"slices"
	"sync"
)

// carried holds the start-up config's entries that failed and were skipped
// (Replay), so that the persisted config keeps them: a start with an image
// file missing or a cache damaged is not a configuration change, and must
// not make the next start forget a bdev or an export. A carried entry goes
// into every persisted config, after the live entries of its subsystem,
// until it no longer applies; then it is dropped for good:
//   - it is superseded: the live config has an entry with the same method
//     about the same name, or the bdev it creates exists now (created
//     again by the operator, or kept by the OCF module as a failed vbdev);
//   - it is orphaned: it needs a bdev that neither exists nor is created by
//     another carried entry (the failed vbdev it exported was deleted).
type carried struct {
	mu      sync.Mutex
	entries map[string][]Method // by subsystem, in config order
}

// set replaces the carried entries.
func (c *carried) set(entries map[string][]Method) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = entries
}

// mergeInto drops the carried entries that no longer apply and adds the
// others to doc, the live config: each before its subsystem's trailing
// bdev_wait_for_examine, if any. exists reports whether a bdev (or an OCF
// vbdev, started or not) of that name exists.
func (c *carried) mergeInto(doc *Document, exists func(name string) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) == 0 {
		return
	}
	live := map[[2]string]bool{} // {method, subject}
	for _, ss := range doc.Subsystems {
		for _, m := range ss.Config {
			live[[2]string{m.Method, parseEntry(m).subject()}] = true
		}
	}
	keep := map[string][]Method{}
	for ss, ms := range c.entries {
		for _, m := range ms {
			e := parseEntry(m)
			if live[[2]string{m.Method, e.subject()}] || (e.created() != "" && exists(e.created())) {
				continue
			}
			keep[ss] = append(keep[ss], m)
		}
	}
	// Drop orphans until none is left: dropping one may orphan another.
	for changed := true; changed; {
		changed = false
		created := map[string]bool{}
		for _, ms := range keep {
			for _, m := range ms {
				created[parseEntry(m).created()] = true
			}
		}
		for ss, ms := range keep {
			n := len(ms)
			keep[ss] = slices.DeleteFunc(ms, func(m Method) bool {
				return slices.ContainsFunc(parseEntry(m).deps(), func(dep string) bool { return !exists(dep) && !created[dep] })
			})
			changed = changed || len(keep[ss]) != n
		}
	}
	c.entries = keep
	for i := range doc.Subsystems {
		ss := &doc.Subsystems[i]
		add := keep[ss.Subsystem]
		if len(add) == 0 {
			continue
		}
		at := len(ss.Config)
		if at > 0 && ss.Config[at-1].Method == "bdev_wait_for_examine" {
			at--
		}
		ss.Config = slices.Insert(ss.Config, at, add...)
	}
}
