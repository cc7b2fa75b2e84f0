"""One writer process for the concurrent-writer tests (tests/test_writers.py, tests/test_atomic_publish.py,
tests/test_overwrite_kill.py): the real Generation and writer on the fake engine.

    python tests/writer_runner.py CONFIG_JSON OUT_DIR [--partition I N] [--overwrite] [--hold] [--delay S]
                                  [--lease-ttl S] [--pause-at POINT] [--kill-at POINT N]

Prints "opened <pid>" once the output is opened (its lease taken). --hold then waits to be killed; otherwise it
generates, each request taking --delay seconds. Exit status: 0 complete, 1 incomplete, 3 the output was refused
or the writer stopped (the message on stderr).

Test-only hooks, installed by patching this process alone (nothing in interplay knows of them):
    --lease-ttl S          the writer's lease lapses S seconds after its last heartbeat (default 60)
    --pause-at POINT       at the first shard, print "paused <pid> <epoch>" (.lease.json at that instant) and
                           hold the writer thread there until a line arrives on stdin; the test SIGSTOPs the
                           process meanwhile (a process cannot reliably stop itself from a thread) and writes the
                           line, which the thread reads once SIGCONT wakes it:
        shard-fsync          its temporary file complete and being fsynced: the publish is next
        mid-shard-write      its rows in the temporary file, the Parquet footer not yet
    --kill-at POINT N      SIGKILL this process at
        delete               the N-th shard that --overwrite deletes
        shard                the N-th shard published (before its shard-log line)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

from fake_engine import fake_open_engines, make_clients
from interplay.common.partition import Partition
from interplay.generator.config import GenerateConfig
from interplay.generator.output.layout import SHARD_RE
from interplay.generator.output.storage import Storage
from interplay.generator.output.writer import CorpusWriter, OutputError
from interplay.generator.runtime.run import Generation


def pause(out: str) -> None:
    lease = json.loads((Path(out) / ".lease.json").read_text())
    print(f"paused {lease['pid']} {lease['epoch']}", flush=True)
    sys.stdin.readline()


def install_pause(point: str, out: str) -> None:
    if point == "mid-shard-write":
        writer = pq.ParquetWriter

        class PausingWriter(writer):
            def close(self) -> None:  # the row group is written; the footer, written by close, is not
                pq.ParquetWriter = writer  # once
                pause(out)
                super().close()
        pq.ParquetWriter = PausingWriter  # storage.py looks it up through pyarrow.parquet at call time
        return
    fsync = os.fsync

    def fsync_then(fd: int) -> None:
        # The writer thread fsyncing a finished shard's temporary file: the last step before the publish.
        target = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if threading.current_thread().name == "interplay-writer" and target.startswith(".shard-") \
                and target.endswith(".tmp"):
            os.fsync = fsync  # once
            pause(out)
        fsync(fd)
    os.fsync = fsync_then


def install_kill(point: str, n: int) -> None:
    count = {"calls": 0}

    def hit() -> bool:
        count["calls"] += 1
        return count["calls"] == n
    if point == "delete":
        delete = Storage.delete

        def delete_then(self: Storage, name: str) -> None:
            if SHARD_RE.match(name) and hit():
                os.kill(os.getpid(), signal.SIGKILL)
            delete(self, name)
        Storage.delete = delete_then
    else:
        write_shard = CorpusWriter._write_shard

        def write_then(self: CorpusWriter, batch: list) -> None:
            write_shard(self, batch)
            if hit():
                os.kill(os.getpid(), signal.SIGKILL)
        CorpusWriter._write_shard = write_then


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("out")
    parser.add_argument("--partition", type=int, nargs=2)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--lease-ttl", type=float)
    parser.add_argument("--pause-at", choices=("shard-fsync", "mid-shard-write"))
    parser.add_argument("--kill-at", nargs=2, metavar=("POINT", "N"))
    args = parser.parse_args(argv)
    if args.lease_ttl is not None:  # Generation passes no ttl: the writer's default is the one used
        CorpusWriter.__init__.__kwdefaults__["lease_ttl_s"] = args.lease_ttl
    if args.pause_at:
        install_pause(args.pause_at, args.out)
    if args.kill_at:
        install_kill(args.kill_at[0], int(args.kill_at[1]))
    config = GenerateConfig.model_validate(json.loads(Path(args.config).read_text()))
    partition = Partition(*args.partition) if args.partition else None
    try:
        generation = Generation(config, args.out, overwrite=args.overwrite, partition=partition)
    except OutputError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 3
    print(f"opened {os.getpid()}", flush=True)
    if args.hold:
        time.sleep(600)
    delay = {"delay": args.delay} if args.delay else {}
    try:
        manifest = asyncio.run(generation.run(fake_open_engines(make_clients(user=delay, recommender=delay))))
    except OutputError as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    return 0 if manifest["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
