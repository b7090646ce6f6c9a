package file

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"blockcache/internal/aligned"
	"blockcache/internal/bdev"
)

// abilities are the device's bdev.Abilities, worked out at Open from how it
// was opened and what it is (rdev is a block device's number). A read-only
// device has none. A regular file discards by punching holes, which read
// back as zeroes. A block device discards when its queue says so in sysfs
// (discard_max_bytes, assumed non-zero when sysfs cannot tell), and a
// discarded range reads back as whatever the device returns. Both write
// zeroes, with FALLOC_FL_ZERO_RANGE or plain writes.
func (d *Device) abilities(rdev uint64) bdev.Abilities {
	switch {
	case d.readOnly:
		return bdev.Abilities{}
	case d.blockDev:
		return bdev.Abilities{Discard: queueDiscards(rdev), WriteZeroes: true}
	}
	return bdev.Abilities{Discard: true, WriteZeroes: true, ZeroesOnDiscard: true}
}

// Discard implements bdev.Discarder: it punches a hole in a regular file,
// which then reads back as zeroes, and issues BLKDISCARD on a block device,
// after which the range reads back as whatever the device returns. A file
// system that cannot punch holes (every common one can: ext4, xfs, btrfs,
// tmpfs) or a device that cannot discard yields an error wrapping both
// bdev.ErrNotSupported and EOPNOTSUPP, although the device's Abilities
// offered Discard.
func (d *Device) Discard(off, length int64) error {
	fd, err := d.begin("discard", off, length, true)
	if err != nil {
		return err
	}
	defer d.end()
	if length == 0 {
		return nil
	}
	if d.blockDev {
		err = blkDiscard(fd, off, length)
	} else {
		err = d.fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	}
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = fmt.Errorf("%w: %w", bdev.ErrNotSupported, err)
		}
		return d.ioError("discard", off, length, err)
	}
	return nil
}

// WriteZeroes implements bdev.WriteZeroer with
// fallocate(FALLOC_FL_ZERO_RANGE), which both file systems and block devices
// offer, and falls back to writing zeroes where it is not supported.
func (d *Device) WriteZeroes(off, length int64) error {
	fd, err := d.begin("write-zeroes", off, length, true)
	if err != nil {
		return err
	}
	defer d.end()
	if length == 0 {
		return nil
	}
	if !d.noZeroRange.Load() {
		err := d.fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return d.ioError("write-zeroes", off, length, err)
		}
		d.noZeroRange.Store(true)
	}
	zeroes := d.zeroBuf()
	for done := int64(0); done < length; {
		n := min(length-done, int64(len(zeroes)))
		if err := d.transfer(d.sys.pwrite, fd, zeroes[:n], off+done); err != nil {
			return d.ioError("write-zeroes", off, length, err)
		}
		done += n
	}
	return nil
}

// zeroBuf returns an aligned buffer of zeroes, bounceSize bytes long. It is
// shared by concurrent writers and never written to.
func (d *Device) zeroBuf() []byte {
	d.zeroesOnce.Do(func() { d.zeroes = aligned.Bytes(d.bounceSize, aligned.Page) })
	return d.zeroes
}
