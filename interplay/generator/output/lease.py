"""One writer per output partition: a lease file naming its holder, renewed by a heartbeat, checked before writes.

    .lease.json              the single run's lease
    .lease-p003of008.json    partition 3 of 8's lease
    .lease.lock              empty; flock'ed for the few milliseconds a lease is read and replaced

A lease holds {owner, host, pid, epoch, heartbeat_at, ttl_s}. A writer takes it before it writes anything, and
a second writer is refused with the holder's host and pid. A lease is stale, and taken over, when its holder is
a dead process on this host (or this very process: an older writer object here is simply superseded), or when
its heartbeat is older than its ttl (a holder on another host that died, or hangs). Each takeover raises the
epoch.

Fencing (as Kafka's producer epochs): every publish (a shard, a shard-log line, the manifest) happens inside
`held()`, which takes the lock, re-reads the lease and stops with LeaseLost if another owner holds it. A takeover
takes the same lock, so none can come between the check and the publish: a writer that was paused past its ttl,
or a restarted Ray actor's old self that still runs, cannot publish after its successor has taken over. (A writer
paused while it holds the lock, a few milliseconds a publish, makes a successor wait until it goes on or dies.)

Where it holds: reading and replacing the lease, and each fenced publish, happen under flock, which is atomic on
a local filesystem and on NFSv4 (Linux emulates flock with NFS byte-range locks). On s3:// there is no lock, and
the store decides instead (objectstore.py): the lease is created only if absent, and renewed or taken over only
from the version read (If-Match), so of two writers in the same instant exactly one takes it and the other is
refused naming it; a superseded writer's renewal fails. The fence there is a check, then a conditional upload
(docs/guarantees.md says what that leaves). On a store without conditional writes the lease is written and read
back, which catches a second writer started seconds later but not two started in the same instant: a writer opens
such a store only when its user promised a single writer per partition. docs/guarantees.md lists every way this
can break.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from interplay.generator.output.storage import OutputError, Storage, tmp_target

LEASE_TTL_S = 60.0  # a lease whose heartbeat is older than this is stale (the holder died or hangs)
LOCK_NAME = ".lease.lock"


class LeaseHeld(Exception):
    """Another live writer holds the lease; the message names it."""


class LeaseLost(Exception):
    """This writer's lease was taken over: it must not write any more."""


def lease_name(tag: str | None) -> str:
    return ".lease.json" if tag is None else f".lease-{tag}.json"


def describe(lease: dict[str, Any]) -> str:
    age = time.time() - float(lease.get("heartbeat_at", 0))
    return (f"pid {lease.get('pid')} on host {lease.get('host')} (epoch {lease.get('epoch')}, "
            f"heartbeat {age:.0f} s ago)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(lease: dict[str, Any], *, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    if now - float(lease.get("heartbeat_at", 0)) > float(lease.get("ttl_s", LEASE_TTL_S)):
        return True
    if lease.get("host") == socket.gethostname():
        pid = int(lease.get("pid", -1))
        return pid == os.getpid() or not _pid_alive(pid)
    return False


class Lease:
    """A held lease. Publish inside `held()`; `release()` when done."""

    def __init__(self, storage: Storage, name: str, record: dict[str, Any]):
        self.storage, self.name, self.record = storage, name, record
        self.version: str | None = None  # on a conditional store: the lease's version as this writer wrote it
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def owner(self) -> str:
        return self.record["owner"]

    @property
    def tag(self) -> str:
        """Names this writer's temporary files (storage.py): its epoch, and its owner to tell apart two writers that
        raced to the same epoch where there is no lock."""
        return f"e{self.record['epoch']}-{self.owner[:12]}"

    @classmethod
    def acquire(cls, storage: Storage, name: str, *, ttl_s: float = LEASE_TTL_S, wait_s: float = 0.0,
                heartbeat: bool = True, guard: Callable[[], Callable[[], None] | None] | None = None) -> Lease:
        """Take the lease, or raise LeaseHeld naming the holder (after waiting up to `wait_s` for it to lapse).

        `guard` runs under the lock once the lease is free, before it is written: it raises to refuse (nothing is
        written), or returns what to do right after the lease is written, still under the lock (the writer checks
        the output's layout and records it there: checks.py); if that raises, the lease is given back."""
        deadline = time.time() + wait_s
        while True:
            with _mutex(storage):
                current, version = _read_versioned(storage, name)
                if current is None or is_stale(current):
                    then = guard() if guard is not None else None
                    record = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
                              "epoch": int((current or {}).get("epoch", 0)) + 1, "acquired_at": time.time(),
                              "heartbeat_at": time.time(), "ttl_s": ttl_s}
                    if storage.is_conditional:
                        version = storage.put_if(name, json.dumps(record).encode(), version)
                        if version is None:  # another writer took it this very instant: look again (and name it)
                            continue
                    else:
                        # A lease write killed before its rename leaves its temporary file; none is under way now.
                        for leftover in storage.names():
                            if tmp_target(leftover) == name:
                                storage.delete(leftover)
                        storage.write_atomic(name, json.dumps(record).encode())
                    if then is not None:
                        try:
                            then()
                        except BaseException:
                            with contextlib.suppress(OSError, OutputError):
                                storage.delete(name, version=version)  # ours: the lock is held, or the version
                            raise
                    break
            if time.time() >= deadline:
                raise LeaseHeld(f"another writer holds {storage.path(name)}: {describe(current)}; wait for it "
                                "to finish, stop it, or use another --output")
            time.sleep(min(1.0, max(0.05, deadline - time.time())))
        lease = cls(storage, name, record)
        lease.version = version
        try:  # written: from here on a failure gives it back (release deletes it only while it is still ours)
            lease.check()  # read back: on an object store this is the only sign of a writer that raced us
            if heartbeat:
                lease._thread = threading.Thread(target=_beat, args=(weakref.ref(lease), ttl_s / 4, lease._stop),
                                                 name=f"interplay-lease{name}", daemon=True)
                lease._thread.start()
        except BaseException:
            lease.release()
            raise
        return lease

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The fence around a publish: the lock held and the lease re-read and still this writer's (LeaseLost if
        not), until the block ends."""
        with _mutex(self.storage):
            self.check()
            yield

    def check(self) -> None:
        """Raise LeaseLost unless this writer still holds the lease."""
        if self.lost is None:
            current = _read(self.storage, self.name)
            if current is None or current.get("owner") != self.owner:
                self.lost = ("released" if current is None else describe(current))
        if self.lost is not None:
            raise LeaseLost(f"this writer no longer holds {self.storage.path(self.name)} (now: {self.lost}): "
                            "another writer took the output over; stopped without writing")

    def renew(self) -> None:
        if not self.storage.is_conditional:
            with self.held():
                self.record["heartbeat_at"] = time.time()
                self.storage.write_atomic(self.name, json.dumps(self.record).encode())
            return
        # One compare-and-swap: replaced only while it is the version this writer wrote last.
        record = {**self.record, "heartbeat_at": time.time()}
        version = self.storage.put_if(self.name, json.dumps(record).encode(), self.version)
        if version is None:  # taken over (or released) since: the store refused to replace it
            with contextlib.suppress(LeaseLost):
                self.check()  # names the new holder
            self.lost = self.lost or "replaced by another writer"
            raise LeaseLost(f"this writer no longer holds {self.storage.path(self.name)} (now: {self.lost})")
        self.record, self.version = record, version

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError, OutputError), _mutex(self.storage):
            current, version = _read_versioned(self.storage, self.name)
            if current is not None and current.get("owner") == self.owner:
                self.storage.delete(self.name, version=version)  # on s3://, only that version: still ours
        self.lost = self.lost or "released"


def _beat(ref: weakref.ref, every_s: float, stop: threading.Event) -> None:
    # Holds the lease only weakly, so an abandoned writer's lease is not kept alive by its own heartbeat.
    while not stop.wait(every_s):
        lease = ref()
        if lease is None or lease.lost is not None:
            return
        with contextlib.suppress(LeaseLost, OSError, OutputError):  # lost, or the store did not answer: the
            # next publish reports it
            lease.renew()
        del lease


def live_leases(storage: Storage, names: list[str]) -> dict[str, dict[str, Any]]:
    """The leases among `names` (.lease.json, .lease-p003of008.json) whose holders are alive: name -> lease."""
    found = {n: _read(storage, n) for n in names if n.startswith(".lease") and n.endswith(".json")}
    return {n: lease for n, lease in found.items() if lease is not None and not is_stale(lease)}


def _read_versioned(storage: Storage, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """The lease and, on a conditional store, the version it was read at (None: absent, or not such a store)."""
    if not storage.is_conditional:
        return _read(storage, name), None
    got = storage.read_versioned(name)
    if got is None:
        return None, None
    try:
        return json.loads(got[0]), got[1]
    except ValueError:  # not a lease: taken over from the version read, like a stale one
        return None, got[1]


def _read(storage: Storage, name: str) -> dict[str, Any] | None:
    try:
        data = storage.read_bytes(name)
        return None if data is None else json.loads(data)
    except (OSError, ValueError):  # torn or unreadable: only ever written atomically, so treat as absent
        return None


@contextlib.contextmanager
def _mutex(storage: Storage) -> Iterator[None]:
    path = storage.local_path(LOCK_NAME)
    if path is None:  # object store: no lock (see the module docstring)
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock
