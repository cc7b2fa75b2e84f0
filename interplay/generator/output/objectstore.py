"""An output on S3 (`s3://bucket/prefix`) through boto3, with the store's conditional writes.

    AWS_ENDPOINT_URL=http://127.0.0.1:9000 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
        interplay generate --config configs/embedded.yaml --output s3://bucket/corpus

The endpoint (AWS S3, or MinIO, R2, a local server), the credentials and the region come the standard way: the
AWS_* variables and ~/.aws, as boto3 reads them (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_PROFILE, AWS_DEFAULT_REGION, AWS_MAX_ATTEMPTS, ...).

A conditional PutObject (S3 since 2024, MinIO, moto's server) carries `If-None-Match: *`, to create the object only
if no object has its key, or `If-Match: <etag>`, to replace it only while it is still that version. A write whose
condition fails gets 412 and changes nothing. The store decides each one alone, so of two writers in the same
instant exactly one succeeds, whatever the timing:
- a shard and the layout record are created only if absent: never over an object that exists, however new;
- a lease is created only if absent, and renewed or taken over only from the version read (compare-and-swap:
  lease.py);
- a file a writer rewrites (its manifest, shard log, failure log) is replaced only while it is the version this
  writer last read or wrote, so a superseded writer's rewrite fails once its successor has written the file.

Every object is written whole by one PutObject, which a reader sees whole or not at all: no temporary name, no
rename. A write whose reply was lost and that boto3 retried gets 412 from its own first attempt: an object whose
ETag is the MD5 of what we sent is ours, and counts as written.

Before a writer opens the output, `open_for_writing` asks the store once: is it reachable, does it take these
credentials, does the bucket exist, does it honour both conditions (a probe object written twice, then deleted).
Each failure is one OutputError naming the URI and the store's own error. A store that ignores the conditions is
refused unless the user promises a single writer (`--single-writer-i-promise`); then it is written the old way,
checks then plain uploads.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from interplay.generator.output.storage import Fence, OutputError, ShardFile, Storage, StoreError, fenced

_TAIL_BYTES = 64 << 10  # read with a Parquet footer: one request for a shard's metadata
_NO_ETAG = '"00000000000000000000000000000000"'  # an If-Match that no object matches: the probe's second test


class Unsupported(StoreError):
    """The store does not implement what was asked (501), such as a conditional write."""


class Conflict(FileExistsError):
    """A conditional write's condition failed (412): another writer created or changed the object first."""


class S3Storage(Storage):
    """An s3:// output: the Storage interface on boto3 (see the module docstring)."""

    def __init__(self, location: str, filesystem: Any = None, *, single_writer: bool = False):
        location = str(location)
        bucket, _, prefix = location.split("://", 1)[1].partition("/")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.fs, self.root, self.location = None, f"{bucket}/{self.prefix}".rstrip("/"), location
        self.is_local = False
        self.single_writer = single_writer
        self.is_conditional = True  # until the probe finds a store that ignores the conditions
        self._client: Any = None
        # name -> the ETag this storage last read or wrote it with (None: it was absent); what a fenced rewrite
        # of that name must still find to replace it
        self._versions: dict[str, str | None] = {}

    # -- the client and its errors ----------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise OutputError(f"{self.location}: s3:// outputs need boto3 (pip install 'interplay[s3]', or "
                                  "make install)") from None
            self._client = boto3.client("s3", config=Config(connect_timeout=10, read_timeout=60))
        return self._client

    def _call(self, op: str, name: str | None, **kwargs: Any) -> Any:
        """One request; FileNotFoundError for a missing key, Conflict for a failed condition, StoreError for
        anything else (the store unreachable, credentials refused, no such bucket, ...)."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = self.path(name) if name is not None else self.location
        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kwargs)
        except ClientError as e:
            error, status = e.response.get("Error", {}), e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(error.get("Code") or status)
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409") or status == 412:
                raise Conflict(f"{where}: {code}") from None
            if code == "NoSuchBucket" or (code == "404" and name is None):
                raise StoreError(f"{where}: the bucket {self.bucket!r} does not exist ({code})") from None
            if code in ("NoSuchKey", "404") or status == 404:
                raise FileNotFoundError(where) from None
            message = error.get("Message") or "refused"
            if code == "NotImplemented" or status == 501:
                raise Unsupported(f"{where}: the store answered {code}: {message}") from None
            if status == 403:
                message += " (see the credentials and what they may do: AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws)"
            raise StoreError(f"{where}: the store answered {code}: {message}") from None
        except BotoCoreError as e:
            raise StoreError(f"{where}: {type(e).__name__}: {e}") from None

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    # -- reading ----------------------------------------------------------------------------------------------

    def path(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._key(name)}"

    def names(self) -> list[str]:
        prefix, found, token = (f"{self.prefix}/" if self.prefix else ""), set(), None
        while True:
            page = self._call("list_objects_v2", None, Prefix=prefix, Delimiter="/",
                              **({"ContinuationToken": token} if token else {}))
            found.update(o["Key"][len(prefix):] for o in page.get("Contents", []))
            found.update(p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
            if not page.get("IsTruncated"):
                return sorted(n for n in found if n)
            token = page["NextContinuationToken"]

    def exists(self, name: str) -> bool:
        try:
            self._call("head_object", name, Key=self._key(name))
        except FileNotFoundError:
            return False
        return True

    def read_versioned(self, name: str) -> tuple[bytes, str] | None:
        """(the object's bytes, its ETag), or None if it does not exist."""
        try:
            reply = self._call("get_object", name, Key=self._key(name))
            data = reply["Body"].read()
        except FileNotFoundError:
            self._versions[name] = None
            return None
        self._versions[name] = reply["ETag"]
        return data, reply["ETag"]

    def read_bytes(self, name: str) -> bytes | None:
        got = self.read_versioned(name)
        return None if got is None else got[0]

    def open_parquet(self, name: str) -> pq.ParquetFile:
        return pq.ParquetFile(pa.BufferReader(self._required(name)))

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(pa.BufferReader(self._required(name)), columns=columns)

    def read_metadata(self, name: str) -> pq.FileMetaData:
        """The footer only: the file's last 64 KiB in one request (a second one for a larger footer)."""
        with pa.PythonFile(_Ranged(self, name), mode="r") as f:
            return pq.ParquetFile(f).metadata

    def source(self, name: str) -> ShardFile:
        return ShardFile.lazy(name, lambda: _Ranged(self, name))

    def _required(self, name: str) -> bytes:
        got = self.read_versioned(name)
        if got is None:
            raise FileNotFoundError(self.path(name))
        return got[0]

    def local_path(self, name: str = "") -> None:
        return None

    # -- writing ----------------------------------------------------------------------------------------------

    def open_for_writing(self) -> None:
        """Ask the store once, before a writer opens the output (see the module docstring)."""
        self._call("head_bucket", None)
        probe = f".interplay-probe-{uuid.uuid4().hex[:12]}"
        try:
            self.is_conditional = self._honours_conditions(probe)
        finally:
            with contextlib.suppress(OutputError, OSError):
                self._call("delete_object", probe, Key=self._key(probe))
        if not self.is_conditional and not self.single_writer:
            raise OutputError(
                f"{self.location}: this store ignores conditional writes (If-None-Match, If-Match), so two writers "
                "started together could both take the lease and write the same partition twice; use a store that "
                "honours them (S3, a recent MinIO), or pass --single-writer-i-promise if exactly one writer per "
                "partition will ever run")

    def _honours_conditions(self, probe: str) -> bool:
        """Write `probe`, then write it again under each condition, which must fail."""
        try:
            self._put(probe, b"", expect=None)
            for expect in (None, _NO_ETAG):  # create-if-absent of an object that exists; a version it is not
                try:
                    self._put(probe, b"probe", expect=expect)
                except Conflict:
                    continue
                return False  # written: the store ignored the condition
        except Unsupported:
            return False
        return True

    def makedirs(self) -> None:
        """Nothing to make: a prefix exists once an object has it."""

    def put_if(self, name: str, data: bytes, version: str | None) -> str | None:
        """Write `name` only while it is `version` (absent when None): its new version, or None if another writer
        changed it first. On a store that ignores the conditions (a single writer promised), a plain write."""
        try:
            return self._put(name, data, expect=version)
        except Conflict:
            return None

    def write_atomic(self, name: str, data: bytes, *, fence: Fence | None = None) -> None:
        """A fenced rewrite replaces only the version this writer last saw (module docstring); unfenced, or of a
        file it never saw, any version."""
        expect = self._versions.get(name, ...) if fence is not None else ...
        with fenced(fence):
            try:
                self._put(name, data, expect=expect)
            except Conflict:
                raise OutputError(f"{self.path(name)} was changed by another writer while this one held the "
                                  "output: another writer took it over; stopped without writing") from None

    def create_exclusive(self, name: str, data: bytes) -> bool:
        try:
            self._put(name, data, expect=None)
        except Conflict:
            return False
        return True

    def write_table_atomic(self, name: str, table: pa.Table, *, row_group_size: int,
                           fence: Fence | None = None) -> None:
        """Encoded here, then created only if absent (FileExistsError if a shard of that name exists)."""
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(sink, table.schema, compression="zstd") as w:
            w.write_table(table, row_group_size=row_group_size)
        with fenced(fence):
            self._put(name, sink.getvalue().to_pybytes(), expect=None)

    def append(self, name: str, data: bytes) -> None:
        raise OSError(f"{self.path(name)}: an object store cannot append (shardlog.py rewrites the log instead)")

    def delete(self, name: str, *, version: str | None = None) -> None:
        """Delete `name`; with `version`, only while it is that version (nothing happens otherwise)."""
        try:
            self._call("delete_object", name, Key=self._key(name), **({"IfMatch": version} if version else {}))
        except (Conflict, FileNotFoundError):
            return
        self._versions[name] = None

    def _put(self, name: str, data: bytes, *, expect: Any) -> str:
        """PutObject: `expect` None creates only if absent, an ETag replaces only that version, `...` anything.
        Returns the new ETag; Conflict if the condition failed (and the object is not what we sent)."""
        condition = {} if expect is ... else {"IfNoneMatch": "*"} if expect is None else {"IfMatch": expect}
        if condition and not self.is_conditional:  # a single writer promised: check, then a plain upload
            if expect is None and self.exists(name):
                raise Conflict(f"{self.path(name)} exists")
            condition = {}
        try:
            try:
                etag = self._call("put_object", name, Key=self._key(name), Body=data, **condition)["ETag"]
            except FileNotFoundError:  # If-Match on an object deleted since: not that version either
                raise Conflict(self.path(name)) from None
        except Conflict:
            etag = self._ours(name, data)
            if etag is None:
                raise
        self._versions[name] = etag
        return etag

    def _ours(self, name: str, data: bytes) -> str | None:
        """The ETag of `name` if it holds exactly `data` (our own write, whose reply was lost and retried)."""
        try:
            etag = self._call("head_object", name, Key=self._key(name))["ETag"]
        except FileNotFoundError:
            return None
        return etag if etag.strip('"') == hashlib.md5(data).hexdigest() else None


class _Ranged(io.RawIOBase):
    """A remote object as a seekable file: its tail fetched at once, other reads one ranged GET each."""

    def __init__(self, storage: S3Storage, name: str):
        self.storage, self.name, self.pos = storage, name, 0
        reply = storage._call("get_object", name, Key=storage._key(name), Range=f"bytes=-{_TAIL_BYTES}")
        self.tail = reply["Body"].read()
        self.size = int(reply["ContentRange"].rsplit("/", 1)[1]) if reply.get("ContentRange") else len(self.tail)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        start, tail_at = self.pos, self.size - len(self.tail)
        if start >= end:
            return b""
        if start >= tail_at:
            data = self.tail[start - tail_at:end - tail_at]
        else:
            reply = self.storage._call("get_object", self.name, Key=self.storage._key(self.name),
                                       Range=f"bytes={start}-{end - 1}")
            data = reply["Body"].read()
        self.pos = start + len(data)
        return data
