package daemon

import (
	"log/slog"
	"path/filepath"
)

// persistLog keeps a failing persisted config from flooding the log: every
// management command saves it, and a data directory that cannot be written
// would otherwise log an ERROR after each one.
type persistLog struct {
	failing bool // the last save failed, and that was logged
}

// saved logs the outcome of one save of the persisted config at path: the
// first failure at ERROR, then nothing while saves keep failing, and the
// first success after them at INFO.
func (p *persistLog) saved(log *slog.Logger, path string, err error) {
	switch {
	case err != nil && !p.failing:
		log.Error("persist config: changes are not saved until this is fixed (logged once)", "path", path, "err", err)
	case err == nil && p.failing:
		log.Info("persist config: saved again", "path", path)
	}
	p.failing = err != nil
}

// logPersistence says once, at start, where a start-up config file's
// changes go: with Bare nowhere, as an SPDK target's --json; otherwise
// into the data directory's config.json, which a start without --config
// or --ini replays. The file itself is never written.
func (d *Daemon) logPersistence() {
	file := d.cfg.ConfigFile
	if file == "" {
		file = d.cfg.INIFile
	}
	switch {
	case file == "":
	case d.cfg.Bare:
		d.log.Info("start-up config replayed; changes are not persisted (--bare): save them with `blockcache config save -o FILE`", "file", file)
	default:
		d.log.Info("start-up config replayed; changes are persisted to the data directory, which a start without --config replays; the file is never written",
			"file", file, "persisted", filepath.Join(d.cfg.DataDir, ConfigFileName))
	}
}
