"""The output location: a local directory, an s3:// URI (objectstore.py: boto3, with the store's conditional writes),
or any other URI pyarrow's filesystems accept (gs://, hdfs://, ...).

Everything the writer does to the output goes through here: list names, read and write whole small files,
write Parquet, and publish a file by writing it under a temporary name and moving it into place.

A temporary name is the publisher's own: `.shard-00000.parquet.e3-1a2b3c4d5e6f.tmp` carries the writer's lease
epoch and owner (a random tag where no writer publishes), so two writers never write the same temporary file,
and it never ends in .parquet, so no reader globbing *.parquet sees a partial file. A publish under a `Fence`
(the writer's lease: lease.py) moves the file into place inside `fence.held()`, which takes the lease lock and
re-checks that the writer still holds the output; a takeover takes the same lock, so none can come between the
check and the move.

Locally the bytes are fsynced first, then a file that must never be replaced (a shard) is hard-linked to its
name (os.link fails if the name exists, whoever made it a moment before) and its temporary name removed; a file
that is rewritten (a manifest) is renamed over the old one; then the directory is fsynced. On s3:// the store
itself decides (objectstore.py). Other object stores through pyarrow have no lock, no rename and no
create-if-absent: a writer is refused there unless its user promises to run a single writer per partition
(`single_writer`, --single-writer-i-promise); then the fence is a check only, "never replace" is a check for the
name, and the move is an upload that appears whole when it completes (docs/guarantees.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# .NAME.TAG.tmp, and .NAME.tmp as earlier versions wrote it: group 1 is NAME.
_TMP_RE = re.compile(r"^\.(.+?)(?:\.(?:e\d+-)?[0-9a-f]{12})?\.tmp$")


class OutputError(Exception):
    """The output cannot be used for this run; the message says why and what to do."""


class StoreError(OutputError):
    """An object store refused or did not answer (objectstore.py); the message names the URI and the store's own
    error."""


@dataclass(frozen=True)
class Fence:
    """Who publishes, and what guards it: `tag` goes into the publisher's temporary names, and `held()` is entered
    around every publish and log append; it raises if the publisher may no longer write."""

    tag: str
    held: Callable[[], AbstractContextManager[None]]


def fenced(fence: Fence | None) -> AbstractContextManager[None]:
    return contextlib.nullcontext() if fence is None else fence.held()


def tmp_name(name: str, tag: str | None = None) -> str:
    return f".{name}.{tag or uuid.uuid4().hex[:12]}.tmp"


def tmp_target(name: str) -> str | None:
    """The name a temporary file was to be published as, or None if `name` is not a temporary file."""
    match = _TMP_RE.match(name)
    return match.group(1) if match else None


class Storage:
    """`single_writer`: the user promises that one writer per partition runs (--single-writer-i-promise), which
    a store without conditional writes needs before a writer may open it."""

    is_conditional = False  # does the store decide create-if-absent and compare-and-swap (objectstore.py)?

    def __new__(cls, location: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None, **kwargs: Any):
        if cls is Storage and filesystem is None and str(location).startswith("s3://"):
            from interplay.generator.output.objectstore import S3Storage

            return super().__new__(S3Storage)
        return super().__new__(cls)

    def __init__(self, location: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None, *,
                 single_writer: bool = False):
        location = str(location)
        self.single_writer = single_writer
        if filesystem is not None:
            self.fs, self.root = filesystem, location
        elif "://" in location:
            self.fs, self.root = pafs.FileSystem.from_uri(location)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(location)
        self.location = location
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __str__(self) -> str:
        return self.location

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def local_path(self, name: str = "") -> Path | None:
        """A local Path for `name`, or None when the output is not on the local filesystem."""
        return Path(self.root, name) if self.is_local else None

    @property
    def slug(self) -> str:
        """The location as one file name, for what is kept on this machine about a remote output (its engine logs):
        s3-bucket-corpus-1a2b3c4d, the hash telling apart locations whose readable part is the same."""
        readable = re.sub(r"[^A-Za-z0-9._]+", "-", self.location.replace("://", "-")).strip("-.")[:80]
        return f"{readable}-{hashlib.sha256(self.location.encode()).hexdigest()[:8]}"

    def makedirs(self) -> None:
        self.fs.create_dir(self.root, recursive=True)

    def open_for_writing(self) -> None:
        """Make the output's directory, before a writer opens it; refuse a store on which two writers started
        together could both write (no lock, no create-if-absent) unless a single writer was promised."""
        if not self.is_local and not self.single_writer:
            raise OutputError(
                f"{self.location}: interplay makes conditional writes (create-if-absent, compare-and-swap) on "
                "local and shared filesystems and on s3:// only; through pyarrow this store has none, so two "
                "writers started together could both take the lease and write the same partition twice; write to "
                "s3:// or a filesystem, or pass --single-writer-i-promise if exactly one writer per partition will "
                "ever run")
        self.makedirs()
    def names(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(info.base_name for info in infos)

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def read_bytes(self, name: str) -> bytes | None:
        if not self.exists(name):
            return None
        with self.fs.open_input_stream(self.path(name)) as f:
            return f.read()

    def delete(self, name: str, *, version: str | None = None) -> None:
        """`version` is for a conditional store (objectstore.py); here the lease lock guards what is deleted."""
        self.fs.delete_file(self.path(name))

    def write_atomic(self, name: str, data: bytes, *, fence: Fence | None = None) -> None:
        """Write `name` whole, replacing it if it exists; under `fence`, only while the fence holds."""
        self._put(name, lambda f: f.write(data), fence, replace=True)

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Write `name` whole only if it does not exist yet: True if this call created it, False if it was there.

        Locally this is atomic (the hard link fails if `name` exists). Object stores have no create-if-absent in
        pyarrow's interface: there it checks, writes and reads back. Two callers in the same instant can then both
        pass the check; the read-back tells the one whose bytes were overwritten before it looked, not one that
        looked before the other wrote (docs/guarantees.md)."""
        if not self.is_local:
            if self.exists(name):
                return False
            self.write_atomic(name, data)
            return self.read_bytes(name) == data
        try:
            self._put(name, lambda f: f.write(data), None, replace=False)
        except FileExistsError:
            return False
        return True

    def append(self, name: str, data: bytes) -> None:
        """Append to an existing local file, durably (object stores cannot append: see shardlog.py)."""
        fd = os.open(self.path(name), os.O_WRONLY | os.O_APPEND)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_table_atomic(self, name: str, table: pa.Table, *, row_group_size: int,
                           fence: Fence | None = None) -> None:
        """Write a Parquet file whole, never over an existing one (FileExistsError)."""
        def write(sink: Any) -> None:
            with pq.ParquetWriter(sink, table.schema, compression="zstd") as w:
                w.write_table(table, row_group_size=row_group_size)
        self._put(name, write, fence, replace=False)

    def open_parquet(self, name: str) -> pq.ParquetFile:
        """A Parquet file to read in batches (close it when done)."""
        return pq.ParquetFile(self.fs.open_input_file(self.path(name)))

    @property
    def name(self) -> str:
        """The last component of the location: a corpus's short name in reports."""
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    def read_metadata(self, name: str) -> pq.FileMetaData:
        """A Parquet file's footer (row counts, schema), without its data; FileNotFoundError if it is absent."""
        if not self.exists(name):
            raise FileNotFoundError(self.path(name))
        with self.fs.open_input_file(self.path(name)) as f:
            return pq.ParquetFile(f).metadata

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(name), columns=columns, filesystem=self.fs)

    def source(self, name: str) -> Path | ShardFile:
        """What pq.ParquetFile opens to read `name`: a local Path, or a remote file opened at its first read."""
        local = self.local_path(name)
        return local if local is not None else ShardFile.lazy(name, lambda: self.fs.open_input_file(self.path(name)))

    def _put(self, name: str, write: Callable[[Any], None], fence: Fence | None, *, replace: bool) -> None:
        """Write to a temporary name of the publisher's own, then publish it as `name` inside the fence."""
        tmp = tmp_name(name, fence.tag if fence is not None else None)
        try:
            if self.is_local:
                with pa.OSFile(self.path(tmp), "wb") as f:
                    write(f)
                    os.fsync(f.fileno())  # the bytes reach the disk before the name does: a crash never tears a file
            else:
                with self.fs.open_output_stream(self.path(tmp)) as f:
                    write(f)
            with fenced(fence):
                self._publish(tmp, name, replace=replace)
        except BaseException:
            # The first failure is the one reported: the temporary file may be gone already (a successor clears a
            # superseded writer's), and failing to delete it says nothing about why the publish failed.
            with contextlib.suppress(OSError):
                self.fs.delete_file(self.path(tmp))
            raise
        if self.is_local:  # and the new name survives a power cut
            fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _publish(self, tmp: str, name: str, *, replace: bool) -> None:
        """Move `tmp` to `name` (the one step by which a write reaches its final name); without `replace`, never
        over an existing file (FileExistsError)."""
        if not self.is_local:  # an object store: check, then upload (not atomic: see the module docstring)
            if not replace and self.exists(name):
                raise FileExistsError(f"{self.path(name)} already exists")
            self.fs.move(self.path(tmp), self.path(name))
        elif replace:
            os.replace(self.path(tmp), self.path(name))
        else:
            os.link(self.path(tmp), self.path(name))  # FileExistsError if the name exists, however new
            with contextlib.suppress(OSError):  # published: a leftover second name is cleared at the next open
                os.unlink(self.path(tmp))


class ShardFile(pa.PythonFile):
    """A remote file for pq.ParquetFile, opened at its first read and ordered by name (shard_files' answer for a
    remote output, which a caller may sort)."""

    @classmethod
    def lazy(cls, name: str, opener: Callable[[], Any]) -> ShardFile:
        f = cls(_Lazy(opener), mode="r")  # pyarrow's __cinit__ takes the constructor's arguments: set name after
        f.key = name
        return f

    def __lt__(self, other: ShardFile) -> bool:
        return self.key < other.key


class _Lazy(io.RawIOBase):
    """A readable, seekable file that `opener` opens when it is first used."""

    def __init__(self, opener: Callable[[], Any]):
        self.opener, self.f = opener, None

    def _file(self) -> Any:
        if self.f is None:
            self.f = self.opener()
        return self.f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._file().read(n if n is not None and n >= 0 else None) or b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file().seek(offset, whence)

    def tell(self) -> int:
        return self._file().tell()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        super().close()


# A URI that went through pathlib.Path lost a slash (Path("s3://b/c") is "s3:/b/c"); no local path looks like it.
_FOLDED_URI = re.compile(r"^([a-z][a-z0-9+.-]*):/(?!/)")


def as_storage(out_dir: str | os.PathLike[str] | Storage) -> Storage:
    """An output given as a path, a URI (also one folded by pathlib) or a Storage already."""
    if isinstance(out_dir, Storage):
        return out_dir
    location = str(out_dir)
    if isinstance(out_dir, PurePath) and (match := _FOLDED_URI.match(location)):
        location = f"{match.group(1)}://{location[match.end():]}"
    return Storage(location)
