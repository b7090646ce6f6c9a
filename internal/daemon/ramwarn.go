package daemon

import (
	"strings"
)

// ramCreateMethod is the config method that creates a bdev whose data
// lives in the daemon's memory only. bdev_null_create is not one: a null
// bdev holds no data to lose.
const ramCreateMethod = "bdev_malloc_create"

// warnRAMBdevs logs one WARN per RAM-backed bdev that doc, the data
// directory's persisted config, has just re-created: the bdev is back with
// its name and size but empty, and so are the volumes it is the core of (a
// blank disk); the volumes it only caches keep their cores' data and start
// cold, any dirty data the shutdown did not write back gone. A config file
// given with --config or --ini is the operator's own statement of what to
// build, so it is not warned about.
func (d *Daemon) warnRAMBdevs(doc *Document) {
	for _, ss := range doc.Subsystems {
		if ss.Subsystem != "bdev" {
			continue
		}
		for _, m := range ss.Config {
			if m.Method != ramCreateMethod {
				continue
			}
			name := parseEntry(m).str("name")
			if name == "" {
				continue
			}
			if _, err := d.reg.Lookup(name); err != nil {
				continue // not re-created: its entry failed and was logged
			}
			var volumes []string
			core := false // the core of a volume, not only a cache
			for _, in := range d.ocf.List(name) {
				if in.Name != name {
					volumes = append(volumes, in.Name)
					core = core || in.CoreBdev == name
				}
			}
			vols := strings.Join(volumes, ",")
			msg := "RAM-backed bdev re-created empty: its data, and that of the volumes on it, did not survive the restart"
			switch {
			case vols == "":
				vols = "none"
			case !core:
				// The volumes' data is on their cores.
				msg = "RAM-backed bdev re-created empty: the volumes it caches start cold, without the dirty data the shutdown did not write back"
			}
			d.log.Warn(msg, "bdev", name, "volumes", vols)
		}
	}
}
