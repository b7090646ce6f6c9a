package main

import (
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressView shows how far a long operation is as a progress bar on w
// (stderr): only when w is a terminal or the bar is forced (--progress),
// only once the operation has run for after, and only once its total is
// known. The bar is erased when the operation ends, leaving the line to the
// command's summary. Updates come at most every 200 ms (a flush's polls, a
// load's chunks of entry sectors), so every one is drawn. It is not safe
// for concurrent use.
type progressView struct {
	w     io.Writer
	desc  string // what is done, left of the bar
	unit  string // what is counted, e.g. "lines"
	show  bool
	after time.Duration
	start time.Time
	bar   *progressbar.ProgressBar
	max   int64
}

// newProgressView starts the clock of an operation described as desc
// counting units.
func newProgressView(w io.Writer, desc, unit string, force bool, after time.Duration) *progressView {
	return &progressView{w: w, desc: desc, unit: unit, show: force || isTerminal(w), after: after, start: time.Now()}
}

// update moves the bar to done of total.
func (p *progressView) update(done, total int64) {
	if !p.show || total <= 0 || time.Since(p.start) < p.after {
		return
	}
	if p.bar == nil {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(p.desc),
			progressbar.OptionSetItsString(p.unit),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionClearOnFinish(),
		)
	} else if total != p.max {
		p.bar.ChangeMax64(total)
	}
	p.max = total
	// The bar refuses counts past its end; a total that grows (lines made
	// dirty during a flush) is caught up by the next update.
	_ = p.bar.Set64(min(done, total))
}

// describe replaces what the bar says is done (desc), from its next draw.
func (p *progressView) describe(desc string) {
	p.desc = desc
	if p.bar != nil {
		p.bar.Describe(desc)
	}
}

// shown reports whether the bar was ever drawn.
func (p *progressView) shown() bool { return p.bar != nil }

// finish erases the bar, whether it reached its end or not.
func (p *progressView) finish() {
	if p.bar == nil {
		return
	}
	if !p.bar.IsFinished() {
		_ = p.bar.Clear()
	}
	_ = p.bar.Exit()
}
