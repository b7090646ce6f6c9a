package ocf

import "fmt"

// changeRecorded puts a change of a setting the superblock records in force
// with apply and records it in the superblock. If the write fails, undo puts
// the old setting back and the write's error is returned: a caller told the
// change failed finds the old setting in force, in memory and on the device.
//
// It holds settings throughout, as every other writer of the superblock
// (AddCore, RemoveCore, Stop) does around its own change and write, so no
// write between apply and undo records the change undo takes back. When the
// first superblock copy was written and the second failed, the newest copy
// on the device holds the change: the superblock is written again after
// undo, so that a Load finds the old setting.
func (c *Cache) changeRecorded(apply, undo func()) error {
	c.settings.Lock()
	defer c.settings.Unlock()
	seq := c.superblockSeq()
	apply()
	return c.recordOrUndo(seq, undo)
}

// recordOrUndo writes the superblock to record the changes made since the
// newest copy written had sequence number seq; if the write fails, undo
// takes them back, the superblock is rewritten if a copy holding them
// reached the device, and the write's error is returned (see
// changeRecorded). The caller holds settings from before its changes.
func (c *Cache) recordOrUndo(seq uint64, undo func()) error {
	err := c.writeSuperblock(false)
	if err == nil {
		return nil
	}
	undo()
	if c.superblockSeq() != seq {
		if rerr := c.writeSuperblock(false); rerr != nil {
			return fmt.Errorf("%w; a superblock copy holding the change was written, and rewriting it without the change failed too: %v", err, rerr)
		}
	}
	return err
}

// superblockSeq returns the sequence number of the newest superblock copy
// written.
func (c *Cache) superblockSeq() uint64 {
	c.meta.sync.Lock()
	defer c.meta.sync.Unlock()
	return c.meta.seq
}
