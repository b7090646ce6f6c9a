package main

import (
	"fmt"
	"time"

	"github.com/gdamore/tcell/v2"
	"github.com/rivo/tview"

	"blockcache/internal/metrics"
)

// runTopUI runs top's live view until q: a table of every volume, redrawn
// every interval from fetch, sorted by column col until a key picks
// another.
func runTopUI(fetch func() (metrics.Snapshot, error), interval time.Duration, col int) error {
	prev, err := fetch()
	if err != nil {
		return err
	}
	app := tview.NewApplication()
	table := tview.NewTable().SetFixed(1, 1).SetSeparator(' ')
	status := tview.NewTextView().SetDynamicColors(false)
	layout := tview.NewFlex().SetDirection(tview.FlexRow).AddItem(table, 0, 1, true).AddItem(status, 1, 0, false)

	var rows []topRow
	var lastErr error
	draw := func() {
		table.Clear()
		for i, c := range topColumns {
			title := c.title
			if i == col {
				title += "*"
			}
			table.SetCell(0, i, tview.NewTableCell(title).SetAttributes(tcell.AttrBold).SetSelectable(false))
		}
		sortTopRows(rows, col)
		for r := range rows {
			for i, s := range rows[r].cells() {
				align := tview.AlignRight
				if i == 0 || i == 1 || i == len(topColumns)-1 {
					align = tview.AlignLeft
				}
				table.SetCell(r+1, i, tview.NewTableCell(tview.Escape(s)).SetAlign(align))
			}
		}
		msg := fmt.Sprintf("blockcache top  %d volumes  sorted by %s  every %v  keys: n r w R W h d o c l p sort, q quit",
			len(rows), topColumns[col].title, interval)
		if lastErr != nil {
			msg = "error: " + lastErr.Error()
		}
		status.SetText(msg) // dynamic colors off: shown as is
	}
	rows = topRows(prev, prev)
	draw()

	app.SetInputCapture(func(ev *tcell.EventKey) *tcell.EventKey {
		if ev.Key() == tcell.KeyEscape || ev.Key() == tcell.KeyCtrlC || ev.Rune() == 'q' {
			app.Stop()
			return nil
		}
		if ev.Key() == tcell.KeyRune {
			for i, c := range topColumns {
				if c.less != nil && c.key == ev.Rune() {
					col = i
					draw()
					return nil
				}
			}
		}
		return ev
	})

	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			cur, err := fetch()
			app.QueueUpdateDraw(func() {
				lastErr = err
				if err == nil {
					rows, prev = topRows(prev, cur), cur
				}
				draw()
			})
		}
	}()
	return app.SetRoot(layout, true).Run()
}
