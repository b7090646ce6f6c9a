package uring

// The kernel's io_uring ABI (include/uapi/linux/io_uring.h), as much of it
// as a Ring uses. Layouts are the kernel's; TestABISizes pins them.
//
// One shared mapping holds the two rings (IORING_FEAT_SINGLE_MMAP), a
// second the submission queue entries:
//
//	ring mapping (offSQRing)                    SQE mapping (offSQEs)
//	+------------------------------------+      +-----------------------+
//	| sq head, tail, mask, flags, ...    |      | sqe 0 (64 bytes)      |
//	| sq array: uint32 index per entry   |      | sqe 1                 |
//	| cq head, tail, mask, overflow, ... |      | ...                   |
//	| cqes: 16 bytes each                |      | sqe sqEntries-1       |
//	+------------------------------------+      +-----------------------+
//
// The application writes SQEs and the sq tail and reads the cq tail and
// CQEs; the kernel writes the sq head, the cq tail and CQEs. Heads and
// tails are free-running uint32 counters, masked to index.

const (
	opNop         = 0  // IORING_OP_NOP
	opFsync       = 3  // IORING_OP_FSYNC
	opAsyncCancel = 14 // IORING_OP_ASYNC_CANCEL
	opFallocate   = 17 // IORING_OP_FALLOCATE
	opRead        = 22 // IORING_OP_READ
	opWrite       = 23 // IORING_OP_WRITE

	fsyncDatasync = 1 << 0 // IORING_FSYNC_DATASYNC

	asyncCancelAll = 1 << 0 // IORING_ASYNC_CANCEL_ALL
	asyncCancelAny = 1 << 2 // IORING_ASYNC_CANCEL_ANY

	registerEventfd = 4 // IORING_REGISTER_EVENTFD

	setupCoopTaskrun = 1 << 8 // IORING_SETUP_COOP_TASKRUN: Linux 5.19
	setupTaskrunFlag = 1 << 9 // IORING_SETUP_TASKRUN_FLAG: Linux 5.19

	sqTaskrun = 1 << 2 // IORING_SQ_TASKRUN, in the sq ring's flags

	enterGetevents = 1 << 0 // IORING_ENTER_GETEVENTS

	featSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP
	featRWCurPos   = 1 << 3 // IORING_FEAT_RW_CUR_POS: Linux 5.6, which also brought READ, WRITE and FALLOCATE

	offSQRing = 0          // IORING_OFF_SQ_RING
	offSQEs   = 0x10000000 // IORING_OFF_SQES
)

// sqringOffsets is struct io_sqring_offsets: where each field of the
// submission ring sits in the ring mapping.
type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

// cqringOffsets is struct io_cqring_offsets.
type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// params is struct io_uring_params, io_uring_setup's in-out argument.
type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// sqe is struct io_uring_sqe, one submission. The unions are named after
// the member the Ring uses: off is also addr2, opFlags is rw_flags,
// fsync_flags or cancel_flags.
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	_           uint64
}

// cqe is struct io_uring_cqe, one completion: res is the operation's
// result, a byte count or a negated errno.
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}
