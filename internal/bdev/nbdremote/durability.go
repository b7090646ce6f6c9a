package nbdremote

import (
	"fmt"

	"blockcache/internal/bdev"
	"blockcache/internal/nbdproto"
)

// Write-back loss across a reconnect.
//
// A server that advertises NBD_FLAG_SEND_FLUSH has a volatile write cache:
// a write it acknowledged is durable only once a flush sent after that
// acknowledgement succeeds (or when it carried NBD_CMD_FLAG_FUA). If the
// session is lost in between, the server may have crashed and dropped the
// write, and a flush on the next session cannot say so: it covers only what
// that session wrote. So the device counts, per session, the writes
// acknowledged without a flush covering them; a session that ends with a
// nonzero count records a loss, and Flush reports it, as Linux's errseq
// reports lost write-back to fsync:
//
//   - A Flush fails with ErrWritesLost if a loss was recorded after the
//     last such failure that had been returned when the Flush was called:
//     every Flush in progress when a loss is recorded, or called before the
//     failure reached a caller, fails. The first failure returned clears
//     the mark for Flushes called after it.
//   - A Flush that fails for another reason (a server error, the
//     connection not coming back in time) does not clear the mark.
//   - Writes whose outcome was unknown are resent on the new session and
//     counted there: their durability is the new session's flush.
//   - FlushSince (bdev.LossReporter) fails if a loss was recorded after a
//     mark its caller took before writing, whoever Flush reported it to;
//     it clears nothing. A writer that flushes its own writes (the cache's
//     cleaner) uses it, so that a Flush reporting the loss to someone else
//     first cannot make the writer's flush succeed. An emulated FUA write
//     (no NBD_FLAG_SEND_FUA) flushes this way too.
//
// A server without NBD_FLAG_SEND_FLUSH promises a write is durable when it
// is acknowledged: nothing is counted and Flush never fails this way.

// ErrWritesLost is returned by Flush when a session to the server was lost
// while writes it had acknowledged were not yet covered by a flush: the
// server may have lost them with its cache. The caller must write that
// data again. It wraps bdev.ErrWritesLost (EIO).
var ErrWritesLost = fmt.Errorf("writes acknowledged by the NBD server before the reconnect may not be durable: %w", bdev.ErrWritesLost)

// writeBack tracks, under Device.mu, what the current session's
// acknowledged writes owe to a flush, and the losses recorded.
type writeBack struct {
	// acked counts modifying requests (write, write zeroes, trim) the
	// current session acknowledged without FUA; durable is the largest
	// value of acked a successful flush covers (its value when the flush
	// was sent). Both restart at zero with each session.
	acked, durable uint64
	// lossSeq counts the sessions that ended with acked > durable;
	// reported is the lossSeq a failure returned by Flush last covered.
	lossSeq, reported uint64
}

// modifies reports whether cmd changes the export's contents.
func modifies(cmd nbdproto.Command) bool {
	return cmd == nbdproto.CmdWrite || cmd == nbdproto.CmdWriteZeroes || cmd == nbdproto.CmdTrim
}

// flushSentLocked records, as r is sent, the acknowledged writes a flush
// request covers if it succeeds.
func (d *Device) flushSentLocked(r *request) {
	if r.cmd == nbdproto.CmdFlush {
		r.flushMark = d.mu.wb.acked
	}
}

// completedLocked counts r's successful outcome: an acknowledged write
// owes a flush, a flush pays for the writes acknowledged before it was
// sent.
func (d *Device) completedLocked(r *request) {
	if r.result != nil || d.flags&nbdproto.TxSendFlush == 0 {
		return
	}
	wb := &d.mu.wb
	switch {
	case r.cmd == nbdproto.CmdFlush:
		wb.durable = max(wb.durable, r.flushMark)
	case modifies(r.cmd) && r.flags&nbdproto.CmdFlagFUA == 0:
		wb.acked++
	}
}

// sessionEndedLocked is called when a new session is about to start, once
// every connection of the previous one stopped: acknowledged writes no
// flush covered are recorded as possibly lost.
func (d *Device) sessionEndedLocked() {
	wb := &d.mu.wb
	if n := wb.acked - wb.durable; wb.acked > wb.durable {
		wb.lossSeq++
		d.event("acknowledged writes may be lost", fmt.Errorf("%d writes acknowledged since the last flush, on a session now lost: %w", n, ErrWritesLost))
	}
	wb.acked, wb.durable = 0, 0
}

// flushed completes a Flush that succeeded on the server: it fails if a
// loss was recorded that no failure returned before the Flush began (seen)
// covers, and the failure it returns covers every loss recorded so far.
func (d *Device) flushed(seen uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	wb := &d.mu.wb
	if wb.lossSeq <= seen {
		return nil
	}
	wb.reported = max(wb.reported, wb.lossSeq)
	return &bdev.IOError{Op: "flush", Dev: d.info.Name, Err: ErrWritesLost}
}

// flushSeen returns the losses already reported when a Flush begins.
func (d *Device) flushSeen() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.wb.reported
}

// WriteBackMark implements bdev.LossReporter.
func (d *Device) WriteBackMark() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.wb.lossSeq
}

// FlushSince implements bdev.LossReporter: it fails with ErrWritesLost if
// a loss was recorded after mark, whether or not Flush reported it; it
// does not clear the mark Flush reports.
func (d *Device) FlushSince(mark uint64) error {
	if d.flags&nbdproto.TxSendFlush == 0 {
		return d.openErr("flush")
	}
	if err := d.do(nbdproto.CmdFlush, 0, nil, 0, 0); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.wb.lossSeq > mark {
		return &bdev.IOError{Op: "flush", Dev: d.info.Name, Err: ErrWritesLost}
	}
	return nil
}
