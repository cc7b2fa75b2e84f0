"""The output location: a local directory or any URI pyarrow's filesystems accept (s3://, gs://, hdfs://, ...).

Everything the writer does to the output goes through here: list names, read and write whole small files,
write Parquet, and publish a file by writing it under a temporary name and moving it into place. Locally the
move is an atomic rename after fsync; on object stores the object appears whole when its upload completes, and
the temporary name never ends in .parquet, so no reader globbing *.parquet sees a partial file either way.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class Storage:
    def __init__(self, location: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None):
        location = str(location)
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

    def makedirs(self) -> None:
        self.fs.create_dir(self.root, recursive=True)

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

    def delete(self, name: str) -> None:
        self.fs.delete_file(self.path(name))

    def write_atomic(self, name: str, data: bytes, *, fence: Callable[[], None] | None = None) -> None:
        """Write `name` whole. `fence` runs just before the file appears; if it raises, nothing appears."""
        tmp = f".{name}.tmp"
        with self.fs.open_output_stream(self.path(tmp)) as f:
            f.write(data)
        self._fenced_publish(tmp, name, fence, replace=True)

    def create_exclusive(self, name: str, data: bytes) -> bool:
        """Write `name` whole only if it does not exist yet: True if this call created it, False if it was there.

        Locally this is atomic: the bytes go to a temporary file of this call's own, fsynced, which is then
        hard-linked (os.link) to `name`; the link fails if `name` exists, whoever made it a moment before. Object
        stores have no create-if-absent in pyarrow's interface: there it checks, writes and reads back. Two
        callers in the same instant can then both pass the check; the read-back tells the one whose bytes were
        overwritten before it looked, not one that looked before the other wrote (docs/guarantees.md)."""
        if not self.is_local:
            if self.exists(name):
                return False
            self.write_atomic(name, data)
            return self.read_bytes(name) == data
        tmp = self.path(f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path(name))
            except FileExistsError:
                return False
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        fd = os.open(self.root, os.O_RDONLY)  # the new name survives a power cut
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
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
                           fence: Callable[[], None] | None = None) -> None:
        """Write a Parquet file whole, never over an existing one (FileExistsError)."""
        tmp = f".{name}.tmp"
        with pq.ParquetWriter(self.path(tmp), table.schema, compression="zstd", filesystem=self.fs) as w:
            w.write_table(table, row_group_size=row_group_size)
        self._fenced_publish(tmp, name, fence, replace=False)

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

    def _fenced_publish(self, tmp: str, name: str, fence: Callable[[], None] | None, *, replace: bool) -> None:
        try:
            if fence is not None:
                fence()
            if not replace and self.exists(name):
                raise FileExistsError(f"{self.path(name)} already exists")
        except BaseException:
            self.fs.delete_file(self.path(tmp))
            raise
        self._publish(tmp, name)

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(name), columns=columns, filesystem=self.fs)

    def _publish(self, tmp: str, name: str) -> None:
        if self.is_local:  # the bytes reach the disk before the name does, so a crash never leaves a torn file
            fd = os.open(self.path(tmp), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.fs.move(self.path(tmp), self.path(name))
        if self.is_local:  # and the rename itself survives a power cut
            fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def as_storage(out_dir: str | os.PathLike[str] | Storage) -> Storage:
    """An output given as a path, a URI or a Storage already."""
    return out_dir if isinstance(out_dir, Storage) else Storage(out_dir)
