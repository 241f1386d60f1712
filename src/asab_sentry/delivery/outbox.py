"""
The outbox: envelopes on disk until Sentry has accepted them (``[sentry] outbox = <directory>``).

Layout of the directory (mode 0700; files 0600, since events carry local variables):

- ``<nanoseconds>-<pid>-<sequence>.envelope.gz``: one envelope each, gzip-compressed as it is sent (the body
  of the request). Names sort by age. Written under a hidden temporary name and renamed, so a file with this
  name is always complete; the gzip checksum catches what was damaged afterwards.
- ``.lock``: held (``flock``) by the one process that uses the directory, and holds its pid.
- ``corrupt/``: files that could not be read, moved aside and reported.

Files are not fsync'ed: they survive the process being killed (``kill -9``, OOM), not a power loss.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import fcntl
import gzip
import itertools
import os
import threading
import time
import zlib

from sentry_sdk.envelope import Envelope

SUFFIX = ".envelope.gz"
LOCK_NAME = ".lock"
CORRUPT_DIR = "corrupt"


class OutboxLocked(Exception):
	"""Another process uses the outbox directory."""

	def __init__(self, directory: str, holder: str):
		self.Directory = directory
		self.Holder = holder
		super().__init__(
			"outbox {} is in use by another process{}; each process needs its own outbox directory".format(
				directory, " (pid {})".format(holder) if holder else ""
			)
		)


class NotAnOutbox(OSError):
	"""The directory exists with other files in it and was never an outbox: it is not taken over (chmod, lock)."""


def is_foreign(directory: str) -> bool:
	"""
	True when `directory` exists, is not empty, and was never an outbox (no ``.lock`` and no envelope file):
	opening it would chmod it to 0700, lock it and move files aside, so a mistyped path (a data directory) is
	refused instead.
	"""
	try:
		names = os.listdir(directory)
	except (FileNotFoundError, NotADirectoryError):
		return False
	return bool(names) and LOCK_NAME not in names and not any(name.endswith(SUFFIX) for name in names)


class CorruptEnvelope(Exception):
	"""An outbox file is not a complete, readable envelope."""


@dataclasses.dataclass
class OutboxFile:
	path: str
	size: int
	created: float  # unix time


def created_of(name: str) -> float:
	"""Unix time an outbox file was written, from its name (0 when the name is not ours)."""
	try:
		return int(name.split("-", 1)[0]) / 1e9
	except ValueError:
		return 0.0


def decode(body: bytes) -> Envelope:
	"""The envelope of an outbox file's content; `CorruptEnvelope` when it is damaged or truncated."""
	try:
		raw = gzip.decompress(body)
		envelope = Envelope.deserialize(raw)
	except (OSError, EOFError, zlib.error, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
		raise CorruptEnvelope(str(e) or type(e).__name__)
	if not envelope.items:
		raise CorruptEnvelope("no items")
	return envelope


class Outbox:
	"""
	A locked outbox directory with a size bound. Thread-safe.

	Args:
		directory: created (0700) when missing.
		max_size: bytes; when the files exceed it, `add` evicts the oldest.
		max_age: seconds; `expired` lists older files.

	Raises:
		OutboxLocked: another process holds the directory.
		OSError: it cannot be created or locked.
	"""

	def __init__(self, directory: str, max_size: int, max_age: float):
		self.Directory = os.path.abspath(directory)
		self.MaxSize = max_size
		self.MaxAge = max_age
		self._lock = threading.Lock()
		self._files: collections.OrderedDict[str, OutboxFile] = collections.OrderedDict()
		self._size = 0
		self._sequence = itertools.count()
		self._lock_fd: int | None = None
		if is_foreign(self.Directory):
			raise NotAnOutbox(
				"{} holds other files and was never an outbox (no {}, no *{} file): give an empty or new "
				"directory".format(self.Directory, LOCK_NAME, SUFFIX)
			)
		os.makedirs(self.Directory, mode=0o700, exist_ok=True)
		os.chmod(self.Directory, 0o700)
		self._acquire()
		self._scan()

	def _acquire(self) -> None:
		path = os.path.join(self.Directory, LOCK_NAME)
		fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
		try:
			fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
		except OSError as e:
			holder = ""
			try:
				holder = os.read(fd, 32).decode("ascii", "replace").strip()
			except OSError:
				pass
			os.close(fd)
			if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
				raise OutboxLocked(self.Directory, holder)
			raise
		os.ftruncate(fd, 0)
		os.write(fd, str(os.getpid()).encode())
		self._lock_fd = fd

	def _scan(self) -> None:
		"""Index the files left by a previous run; leftover temporary files (a write cut short) go aside."""
		for name in sorted(os.listdir(self.Directory)):
			path = os.path.join(self.Directory, name)
			if name.startswith(".tmp-"):
				self.move_aside(path)
				continue
			if not name.endswith(SUFFIX):
				continue
			try:
				size = os.stat(path).st_size
			except OSError:
				continue
			self._files[path] = OutboxFile(path, size, created_of(name))
			self._size += size

	def close(self) -> None:
		"""Release the lock (the files stay)."""
		if self._lock_fd is not None:
			try:
				fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
			finally:
				os.close(self._lock_fd)
				self._lock_fd = None

	def files(self) -> list[OutboxFile]:
		"""The files, oldest first."""
		with self._lock:
			return list(self._files.values())

	@property
	def Size(self) -> int:
		return self._size

	def write(self, body: bytes) -> tuple[OutboxFile, list[OutboxFile]]:
		"""Store one envelope body; returns the new file and the oldest files evicted to stay within max_size."""
		created = time.time_ns()
		name = "{:020d}-{}-{:08d}{}".format(created, os.getpid(), next(self._sequence), SUFFIX)
		path = os.path.join(self.Directory, name)
		tmp = os.path.join(self.Directory, ".tmp-" + name)
		fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
		try:
			try:
				view = memoryview(body)
				while view:
					view = view[os.write(fd, view) :]
			finally:
				os.close(fd)
			os.rename(tmp, path)
		except OSError:
			_unlink(tmp)  # a disk full: the part written would only take space (and be "corrupt" at the next start)
			raise
		entry = OutboxFile(path, len(body), created / 1e9)
		evicted = []
		with self._lock:
			self._files[path] = entry
			self._size += entry.size
			while self._size > self.MaxSize and len(self._files) > 1:
				_, oldest = self._files.popitem(last=False)
				self._size -= oldest.size
				evicted.append(oldest)
		for old in evicted:
			_unlink(old.path)
		return entry, evicted

	def read(self, path: str) -> bytes:
		with open(path, "rb") as f:
			return f.read()

	def remove(self, path: str) -> None:
		with self._lock:
			entry = self._files.pop(path, None)
			if entry is not None:
				self._size -= entry.size
		_unlink(path)

	def expired(self, now: float | None = None) -> list[OutboxFile]:
		"""Remove and return the files older than max_age."""
		limit = (time.time() if now is None else now) - self.MaxAge
		out = []
		with self._lock:
			for entry in list(self._files.values()):
				if entry.created >= limit:
					break
				del self._files[entry.path]
				self._size -= entry.size
				out.append(entry)
		for entry in out:
			_unlink(entry.path)
		return out

	def move_aside(self, path: str) -> str:
		"""Move an unreadable file into ``corrupt/``; returns its new path."""
		with self._lock:
			entry = self._files.pop(path, None)
			if entry is not None:
				self._size -= entry.size
		aside = os.path.join(self.Directory, CORRUPT_DIR)
		os.makedirs(aside, mode=0o700, exist_ok=True)
		target = os.path.join(aside, os.path.basename(path).lstrip("."))
		try:
			os.replace(path, target)
		except FileNotFoundError:
			pass
		return target


def _unlink(path: str) -> None:
	try:
		os.unlink(path)
	except FileNotFoundError:
		pass


def status(directory: str) -> dict:
	"""What an outbox holds, without locking it: files, bytes, oldest (unix time), corrupt files, lock holder."""
	directory = os.path.abspath(directory)
	if not os.path.isdir(directory):
		raise FileNotFoundError("No outbox directory {}".format(directory))
	names = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))
	size = 0
	for name in names:
		try:
			size += os.stat(os.path.join(directory, name)).st_size
		except OSError:
			pass
	corrupt_dir = os.path.join(directory, CORRUPT_DIR)
	corrupt = len(os.listdir(corrupt_dir)) if os.path.isdir(corrupt_dir) else 0
	holder = None
	lock_path = os.path.join(directory, LOCK_NAME)
	if os.path.exists(lock_path):
		fd = os.open(lock_path, os.O_RDONLY)
		try:
			try:
				fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
				fcntl.flock(fd, fcntl.LOCK_UN)
			except OSError:
				holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
		finally:
			os.close(fd)
	return {
		"directory": directory,
		"envelopes": len(names),
		"bytes": size,
		"oldest": created_of(names[0]) if names else None,
		"corrupt": corrupt,
		"locked_by": holder,
	}
