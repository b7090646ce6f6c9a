#!/usr/bin/python3
"""test/ceph/writer.py: the writer of run.sh and its model.

  writer.py write URI LOG STOP   write 1 MiB blocks of a byte pattern at
                                 random MiB offsets of [64, 128) MiB of the
                                 NBD export URI, one at a time, until the
                                 file STOP exists; append each acknowledged
                                 write to LOG as "MILLISECONDS PATTERN MIB"
  writer.py apply LOG FILE       apply the writes of LOG, in order, to FILE

It never flushes: with a write-back cache in front of the core, each write
is acknowledged by the cache, and run.sh checks that this goes on while the
core's server is away. A write that fails ends it with status 1, naming the
write. Needs the libnbd Python bindings (Debian: python3-libnbd).
"""

import os
import random
import sys
import time

MIB = 1 << 20


def write(uri, log, stop):
    import nbd

    h = nbd.NBD()
    h.connect_uri(uri)
    n = 0
    with open(log, "a", buffering=1) as out:
        while not os.path.exists(stop):
            n += 1
            pattern = n % 251 + 1
            mib = 64 + random.randrange(64)
            try:
                h.pwrite(bytes([pattern]) * MIB, mib * MIB)
            except nbd.Error as e:
                sys.exit(f"writer: write {n} (pattern {pattern} at {mib} MiB) failed: {e}")
            out.write(f"{int(time.time() * 1000)} {pattern} {mib}\n")
    h.shutdown()


def apply(log, path):
    fd = os.open(path, os.O_WRONLY)
    with open(log) as f:
        for line in f:
            _, pattern, mib = line.split()
            os.pwrite(fd, bytes([int(pattern)]) * MIB, int(mib) * MIB)
    os.close(fd)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "write":
        write(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "apply":
        apply(*sys.argv[2:])
    else:
        sys.exit("usage: writer.py write URI LOG STOP | writer.py apply LOG FILE")


if __name__ == "__main__":
    main()
