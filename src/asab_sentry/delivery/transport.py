"""
`DeliveryTransport`: sentry-sdk's `Transport` interface, delivering from background threads.

How an envelope travels:

1. ``capture_envelope`` (the capturing thread, in a service the event loop) appends the envelope to a deque,
   no I/O. An event or transaction that the final pass already encoded (`asab_sentry.limits.take_encoded`) is
   appended as those bytes: serializing it costs only its headers, and what waits holds no dicts for the
   cyclic garbage collector to walk (thousands of waiting events made its full collections stall the loop for
   100+ ms). Other envelopes wait as they are. With an outbox it serializes, compresses and writes the file
   first, so that what capture accepted survives the process.
2. A sender (woken only when every sender is idle; it waits `GATHER` for more, then takes them all) serializes
   it (unless it is bytes already), gzips it when it is `COMPRESS_MIN` or larger, and puts the `Parcel` on the
   ready queue, bounded in bytes (``queue_max_size``; over it the new envelope is dropped: ``queue_full``, at
   the hand-over already when the queue has no room left). While every sender waits on the network, or when
   `PIPELINE_MAX` envelopes wait, a preparing thread does this instead, so the bound holds in an outage and a
   storm.
3. A sender takes the oldest parcels that may go (no rate limit on their categories, no back-off running), up to
   `PIPELINE_MAX`, and POSTs them pipelined over its kept-alive connection, acting on each response as it is read; a
   server that closes the connection mid-pipeline gets the unanswered ones again at once (one request at a
   time for `PIPELINING_RETRY` when it closed after a single request), a timeout mid-pipeline is a failure.
4. 2xx: delivered (the outbox file is deleted). 429: the categories are limited (``X-Sentry-Rate-Limits`` or
   ``Retry-After``) and the parcel waits for the end of the window. Connection error, timeout, 5xx: the
   parcel goes back to the head of the queue and the whole transport backs off exponentially with jitter.
   Other 4xx: dropped (``rejected_<status>``).

Exit: `shutdown` (SentryService.finalize) sets one deadline that every later `flush` (sentry-sdk's atexit
hook included) honours; `kill` says in one warning how many envelopes were not delivered and where they are.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import random
import struct
import threading
import time
import typing
import zlib

import sentry_sdk.transport
from sentry_sdk.consts import VERSION as SDK_VERSION
from sentry_sdk.consts import EndpointType
from sentry_sdk.envelope import Envelope, Item

from .. import limits
from ..logging import NO_EVENT
from . import outbox as outbox_module
from .http import Connection, ProxyConnection, Response, connection_factory
from .losses import Losses, item_quantities
from .ratelimits import RateLimits

L = logging.getLogger("asab_sentry.delivery")

MB = 1024 * 1024

#: Envelopes handed over but not yet compressed; a safety bound for a storm faster than the senders.
MAX_INCOMING = 10_000

#: Uncompressed envelopes waiting for the preparing thread, in multiples of ``queue_max_size`` (compressed, they
#: are 4-6 times smaller): room for the backlog of a preparing thread that gets little CPU in a storm.
INCOMING_FACTOR = 4

#: gzip makes an envelope at most this many times smaller (JSON events: 4-8): a queue with less room than the
#: envelope's size divided by it is full for it.
MAX_COMPRESSION = 16

#: Longest an idle sender sleeps without looking at the hand-over deque (capture never waits on the lock).
IDLE_POLL = 0.2

#: A sender woken for a few envelopes waits this long (s) for more before it takes them, so that under a steady
#: flow a sender wakes, takes the interpreter lock and writes to its socket per batch rather than per envelope
#: (each hand-over of the lock between a sender and the event loop costs the loop time: measured on the web
#: benchmark, 5 to 6 futex calls per request before, under one after). Not while a flush or the exit waits.
GATHER = 0.01

#: The most envelopes, and bytes of bodies, a sender sends pipelined in one write on its connection.
PIPELINE_MAX = 128
PIPELINE_BYTES = 1024 * 1024

#: Seconds a sender sends one request at a time after the endpoint closed a connection having answered only one
#: request of a pipeline (it takes one request per connection: HTTP/1.0, gunicorn's sync workers); then it tries
#: pipelining again. A connection closed after answering several (a keep-alive request limit: nginx's
#: ``keepalive_requests``, Apache's ``MaxKeepAliveRequests``) does not stop pipelining.
PIPELINING_RETRY = 300.0


def gzip_body(data: bytes, level: int) -> bytes:
	"""
	``data`` as a gzip member (RFC 1952, what ``Content-Encoding: gzip`` and the outbox files hold).

	The deflate window is sized to the data (512 B to 32 KiB): setting up zlib's full 32 KiB window costs more
	than compressing a typical envelope of a few kB (about 45 µs against 9 µs here), and a window larger than
	the data compresses it no better. Any gzip reader accepts every window size.
	"""
	bits = min(15, max(9, len(data).bit_length()))
	compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + bits, 8 if bits > 12 else 4)
	return compressor.compress(data) + compressor.flush()


#: Envelopes smaller than this (bytes) are sent as they are, not gzipped (see `request_body`).
COMPRESS_MIN = 2048


def request_body(data: bytes, level: int) -> bytes:
	"""
	The request body of an envelope: gzipped (`gzip_body`), or as it is when smaller than `COMPRESS_MIN`.

	A small envelope (a web request's transaction without spans: ~1.2 kB) gzips to about half, so compressing
	it saves under 1 kB per request (about what the request's headers weigh) and costs ~10 µs of a sender's
	CPU plus two releases of the interpreter lock, each a chance for the lock to bounce between the sender and
	the event loop; measured on the web benchmark (docs/web.md), sending them uncompressed took a third of the
	senders' CPU per request. Sentry accepts uncompressed envelopes. Outbox files are always gzipped.
	"""
	if len(data) < COMPRESS_MIN:
		return data
	return gzip_body(data, level)


@dataclasses.dataclass(frozen=True)
class DeliveryOptions:
	"""
	How the delivery behaves; `SentryService` fills it from ``[sentry]`` (see the README for each option).

	Attributes:
		queue_max_size: bytes of compressed envelopes held in memory (16 MB).
		max_concurrent_requests: sender threads, each with one kept-alive connection (4).
		request_timeout: seconds to connect and to wait for a response (10).
		shutdown_timeout: seconds `shutdown` waits, and the bound of all exit flushes together (10).
		outbox: directory of the outbox, or None (no outbox).
		outbox_max_size: bytes (100 MB); the oldest files go first.
		outbox_max_age: seconds (7 days); also the longest an envelope is retried in memory.
		retry_initial / retry_max: back-off after a failure, doubled per consecutive failure, with jitter (s).
		drain_interval: seconds between two sends of envelopes found in the outbox at start (0.1, jittered).
		drain_start_jitter: the first of them waits a random 0..this seconds (1.0).
		compress_level: gzip level of the bodies (6).
	"""

	queue_max_size: int = 16 * MB
	max_concurrent_requests: int = 4
	request_timeout: float = 10.0
	shutdown_timeout: float = 10.0
	outbox: str | None = None
	outbox_max_size: int = 100 * MB
	outbox_max_age: float = 7 * 86400.0
	retry_initial: float = 0.5
	retry_max: float = 30.0
	drain_interval: float = 0.1
	drain_start_jitter: float = 1.0
	compress_level: int = 6


class Parcel:
	"""One envelope on its way: the request body (gzip) or its outbox file, and what it counts as."""

	__slots__ = ("body", "path", "size", "categories", "quantities", "created", "cached", "evicted", "settled")

	def __init__(self, body, path, size, categories, quantities, created, cached=False):
		self.body: bytes | None = body
		self.path: str | None = path
		self.size: int = size
		self.categories: frozenset[str] | None = categories
		self.quantities: list[tuple[str, int]] | None = quantities
		self.created: float = created
		self.cached: bool = cached
		self.evicted: bool = False
		self.settled: bool = True  # False while a sender holds it


class Serialized(typing.NamedTuple):
	"""An envelope serialized when it was handed over, waiting to be compressed."""

	data: bytes
	categories: frozenset[str]
	quantities: list[tuple[str, int]]


class Unfinished(Serialized):
	"""
	An envelope of one error event whose final pass the delivery process finishes (`limits.FinalPass.finish`):
	``data`` is `pack_unfinished`'s (the envelope's header line, the item's headers, the packed event), the size the
	feed counts; `finish_unfinished` makes the `Serialized` envelope of it.
	"""

	__slots__ = ()


_LENGTH = struct.Struct("!I")


def unfinished(envelope: Envelope) -> Unfinished | None:
	"""
	The envelope as `Unfinished` when it is one event the final pass left to the delivery process
	(`limits.Deferred`), else None; the envelope is then as `intake` takes it (an encoding taken is given to it).
	"""
	items = envelope.items
	if len(items) != 1:
		return None
	payload = items[0].payload
	if payload.bytes is not None or payload.json is None:
		return None
	raw = limits.take_encoded(payload.json)
	if raw is None:
		return None
	if type(raw) is not limits.Deferred:
		payload.bytes = raw
		return None
	head = limits.json_dumps(envelope.headers)
	item_headers = limits.json_dumps(items[0].headers)
	categories, quantities = describe(envelope)
	return Unfinished(
		b"".join((_LENGTH.pack(len(head)), head, _LENGTH.pack(len(item_headers)), item_headers, raw)),
		categories,
		quantities,
	)


def finish_unfinished(entry: Unfinished | bytes, final_pass: limits.FinalPass | None = None) -> bytes:
	"""
	The serialized envelope of an `Unfinished` one (its ``data``), byte for byte what sentry-sdk's
	``Envelope.serialize`` makes of it had the final pass run in ``before_send``: the header line, the item's
	headers with its ``length`` (sentry-sdk's ``Item.serialize_into``), the payload (`limits.FinalPass.finish` of
	``final_pass``, by default the running service's).
	"""
	data = entry.data if isinstance(entry, Unfinished) else entry
	(n,) = _LENGTH.unpack_from(data, 0)
	head = data[_LENGTH.size : _LENGTH.size + n]
	at = _LENGTH.size + n
	(m,) = _LENGTH.unpack_from(data, at)
	at += _LENGTH.size
	item_headers = json.loads(data[at : at + m])
	packed = data[at + m :]
	payload = final_pass.finish(packed) if final_pass is not None else limits.finish(packed)
	item_headers["length"] = len(payload)
	return b"".join((head, b"\n", limits.json_dumps(item_headers), b"\n", payload, b"\n"))


def finished(entry: Serialized) -> Serialized:
	"""``entry``, an `Unfinished` one finished here (`finish_unfinished`)."""
	if type(entry) is Unfinished:
		return Serialized(finish_unfinished(entry), entry.categories, entry.quantities)
	return entry


def intake(envelope: Envelope) -> Envelope | Serialized:
	"""The envelope as `Serialized` when the final pass encoded its payloads already, else as it is."""
	if not limits.fill_encoded(envelope):
		return envelope
	categories, quantities = describe(envelope)
	return Serialized(envelope.serialize(), categories, quantities)


def quantities_of(entry: Envelope | Serialized) -> list[tuple[str, int]]:
	"""The client-report quantities of an envelope as `intake` made it."""
	return entry.quantities if isinstance(entry, Serialized) else describe(entry)[1]


def _categories(entry: Envelope | Serialized) -> frozenset[str]:
	return entry.categories if isinstance(entry, Serialized) else describe(entry)[0]


def describe(envelope: Envelope) -> tuple[frozenset[str], list[tuple[str, int]]]:
	"""Rate-limit categories (client reports are never limited) and client-report quantities of an envelope."""
	categories = frozenset(item.data_category for item in envelope.items if item.data_category != "internal")
	quantities = [q for item in envelope.items for q in item_quantities(item)]
	return categories, quantities


class DeliveryTransport(sentry_sdk.transport.Transport):
	"""
	sentry-sdk transport with a byte-bounded queue, concurrent kept-alive requests, retries with back-off,
	rate limits that delay instead of drop, an optional outbox on disk, and an account of every loss.

	Args:
		options: sentry-sdk's client options (at least ``dsn``); ``send_client_reports`` is honoured.
		delivery: the `DeliveryOptions`.

	Attributes:
		Options: the `DeliveryOptions`.
		Losses: counters (captured, sent, retried, dropped_<reason>) and pending client reports.
		RateLimits: the limits Sentry announced.
		Outbox: the `asab_sentry.delivery.outbox.Outbox`, or None.

	Raises:
		OutboxLocked: the outbox directory is used by another process.
	"""

	def __init__(
		self, options: dict[str, typing.Any], delivery: DeliveryOptions | None = None, losses: Losses | None = None
	):
		super().__init__(options)
		self.Options = delivery or DeliveryOptions()
		o = self.Options
		if self.parsed_dsn is None:
			raise ValueError("DeliveryTransport needs a DSN")
		self._auth = self.parsed_dsn.to_auth("sentry.python/{}".format(SDK_VERSION))
		self._url = self._auth.get_api_url(EndpointType.ENVELOPE)
		self._headers = {
			"Content-Type": "application/x-sentry-envelope",
			"User-Agent": "sentry.python/{}".format(SDK_VERSION),
			"X-Sentry-Auth": self._auth.to_header(),
		}
		self._send_client_reports = bool((options or {}).get("send_client_reports", True))
		self.Losses = losses if losses is not None else Losses(where="Sentry at {}".format(self.parsed_dsn.host))
		self.RateLimits = RateLimits()
		self._connect = connection_factory(self._url, o.request_timeout)  # before the outbox is locked: may raise
		self.Outbox = (
			outbox_module.Outbox(o.outbox, o.outbox_max_size, o.outbox_max_age) if o.outbox is not None else None
		)

		lock = threading.RLock()
		self._cond = threading.Condition(lock)  # work for the senders and the preparing thread
		self._settled = threading.Condition(lock)  # something handed over got delivered or dropped: for flush
		self._prepare_wanted = threading.Condition(lock)  # every sender is on the network: the preparing thread
		self._flushing = 0  # flush calls waiting
		self._waiting = 0  # senders waiting for work
		self._gathering = 0  # senders waiting GATHER for more work before they take it
		self._pipelining_after = 0.0  # one request at a time until then: the endpoint took one per connection
		self._incoming: collections.deque[Envelope | Serialized] = collections.deque()
		self._ready: collections.deque[Parcel] = collections.deque()
		self._by_path: dict[str, Parcel] = {}
		self._queued_bytes = 0
		self._preparing = 0
		self._preparer_idle = False
		self._incoming_bytes = 0
		self._bytes_lock = threading.Lock()
		self._inflight = 0
		self._stopping = False
		self._killed = False
		self._backoff_until = 0.0
		self._failures = 0
		self._shutdown_deadline: float | None = None
		self._exit_warned = False
		self._outbox_error_said: float | None = None
		self._last_report = time.monotonic()
		self._drain_next = time.monotonic() + random.uniform(0.0, o.drain_start_jitter)

		if self.Outbox is not None:
			self._load_outbox()
		self._threads = [
			threading.Thread(target=self._run, name="asab-sentry-delivery-{}".format(i), daemon=True)
			for i in range(o.max_concurrent_requests)
		]
		self._threads.append(threading.Thread(target=self._prepare_loop, name="asab-sentry-prepare", daemon=True))
		for thread in self._threads:
			thread.start()

	# sentry-sdk's Transport interface

	def capture_envelope(self, envelope: Envelope) -> None:
		"""Hand an envelope over (O(1) without an outbox; with one, it is on disk when this returns)."""
		if self.Outbox is not None:
			self._capture_to_outbox(envelope)
			return
		if len(self._incoming) >= MAX_INCOMING or self._killed:
			categories, quantities = describe(envelope)
			self.Losses.dropped("shutdown" if self._killed else "queue_full", 1, quantities)
			return
		self.hand_over(intake(envelope))

	def hand_over(self, entry: Envelope | Serialized) -> None:
		"""
		Queue an envelope as `intake` made it (the delivery process hands over what the service serialized).
		Without an outbox only: with one, `capture_envelope` writes it to disk first.
		"""
		if len(self._incoming) >= MAX_INCOMING or self._killed:
			self.Losses.dropped("shutdown" if self._killed else "queue_full", 1, quantities_of(entry))
			return
		if type(entry) is Unfinished:  # (from a delivery process that ended: this process finishes it)
			entry = finished(entry)
		if isinstance(entry, Serialized):
			if self._queued_bytes + len(entry.data) // MAX_COMPRESSION > self.Options.queue_max_size:
				# The compressed queue is full (an endpoint that does not answer): it would be dropped anyway.
				self.Losses.dropped("queue_full", 1, entry.quantities)
				return
			# Uncompressed bytes waiting for the preparing thread: at most INCOMING_FACTOR x queue_max_size.
			with self._bytes_lock:  # never held for more than an addition
				full = self._incoming_bytes + len(entry.data) > INCOMING_FACTOR * self.Options.queue_max_size
				if not full:
					self._incoming_bytes += len(entry.data)
			if full:
				self.Losses.dropped("queue_full", 1, entry.quantities)
				return
		self._incoming.append(entry)
		waiting = len(self._incoming)
		if waiting == 1 and self._waiting >= self.Options.max_concurrent_requests:
			# Every sender is idle: wake one. (Else a sender is at work, or was woken for an envelope before this
			# one: it takes this one with the others when it looks at the deque again; waking a thread costs the
			# loop its turn.)
			self._wake()
		elif waiting >= PIPELINE_MAX and self._preparer_idle:
			# A backlog (a storm, an endpoint that does not answer): the preparing thread compresses it at once.
			self._wake(self._prepare_wanted)

	def _wake(self, condition: threading.Condition | None = None) -> None:
		"""
		Wake a sender (or the waiter of ``condition``) without ever waiting on the lock (a sender may hold it while
		it scans the queue).
		"""
		if self._cond.acquire(blocking=False):
			try:
				(condition or self._cond).notify()
			finally:
				self._cond.release()
		# else: a sender holds the lock and looks at the deque before it sleeps, and sleeps at most IDLE_POLL.

	def flush(self, timeout: float, callback: typing.Any = None) -> None:
		"""Wait until everything handed over is delivered (or dropped), at most ``timeout`` seconds."""
		deadline = time.monotonic() + max(0.0, timeout)
		if self._shutdown_deadline is not None:
			deadline = min(deadline, self._shutdown_deadline)
		self._queue_client_report()
		with self._cond:
			self._flushing += 1
			self._cond.notify_all()  # a sender that missed a wake-up sends now, not at its next IDLE_POLL
			try:
				while self._pending() and not self._stopping:
					left = deadline - time.monotonic()
					if left <= 0:
						break
					self._settled.wait(left)
			finally:
				self._flushing -= 1

	def shutdown(self, timeout: float | None = None) -> int:
		"""
		Flush for the exit: starts the one exit deadline (``timeout``, default ``shutdown_timeout``) that later
		flushes (sentry-sdk's atexit hook) share. Returns the number of envelopes still undelivered.
		"""
		timeout = self.Options.shutdown_timeout if timeout is None else timeout
		if self._shutdown_deadline is None:
			self._shutdown_deadline = time.monotonic() + timeout
		self.flush(timeout)
		with self._cond:
			pending = self._undelivered(list(self._incoming), list(self._ready), self._inflight)
			memory_only = self._memory_only(list(self._incoming), list(self._ready)) if self.Outbox else 0
		if pending and not self._exit_warned:
			self._say_undelivered(pending, memory_only)
		return pending

	@staticmethod
	def _undelivered(incoming: list[Envelope | Serialized], ready: list[Parcel], inflight: int) -> int:
		"""Envelopes not delivered yet, our own client reports not counted."""
		n = inflight + sum(1 for e in incoming if _categories(e))
		return n + sum(1 for p in ready if not p.evicted and p.quantities != [])

	@staticmethod
	def _memory_only(incoming: list[Envelope | Serialized], ready: list[Parcel]) -> int:
		"""Of `_undelivered`, those with no outbox file (its write failed): lost at exit even with an outbox."""
		n = sum(1 for e in incoming if _categories(e))
		return n + sum(1 for p in ready if p.path is None and not p.evicted and p.quantities != [])

	def _say_undelivered(self, n: int, memory_only: int = 0) -> None:
		self._exit_warned = True
		if self.Outbox is not None and memory_only:
			where = (
				"{} kept in the outbox {}, sent at the next start; {} dropped (the outbox could not take them)".format(
					n - memory_only, self.Outbox.Directory, memory_only
				)
			)
		elif self.Outbox is not None:
			where = "kept in the outbox {}, sent at the next start".format(self.Outbox.Directory)
		else:
			where = "dropped (no [sentry] outbox)"
		L.warning(
			"{} envelope(s) not delivered to {} within shutdown_timeout={:g}s: {}.".format(
				n, self.Losses.Where, self.Options.shutdown_timeout, where
			),
			extra={NO_EVENT: True},
		)

	def kill(self) -> None:
		"""Stop the senders; one warning says what was not delivered and where it is."""
		with self._cond:
			if self._killed:
				return
			self._killed = True
			self._stopping = True
			left = list(self._ready)
			incoming = list(self._incoming)
			self._incoming.clear()
			with self._bytes_lock:
				self._incoming_bytes = 0
			self._ready.clear()
			inflight = self._inflight
			self._cond.notify_all()
			self._settled.notify_all()
		undelivered = self._undelivered(incoming, left, inflight)
		memory_only = self._memory_only(incoming, left) if self.Outbox is not None else 0
		if undelivered:
			if self.Outbox is None:
				self.Losses.count("dropped_shutdown", undelivered)
			elif memory_only:
				self.Losses.count("dropped_shutdown", memory_only)
			if not self._exit_warned:
				self._say_undelivered(undelivered, memory_only)
		self.Losses.say_pending()
		if self.Outbox is not None:
			self.Outbox.close()

	def record_lost_event(
		self,
		reason: str,
		data_category: typing.Any = None,
		item: Item | None = None,
		*,
		quantity: int = 1,
	) -> None:
		"""sentry-sdk's losses before the transport (sampling, before_send, ...): into the next client report."""
		if not self._send_client_reports:
			return
		if item is not None:
			for category, n in item_quantities(item):
				self.Losses.record_lost_event(reason, category, n)
		elif data_category is not None:
			self.Losses.record_lost_event(reason, data_category, quantity)

	def is_healthy(self) -> bool:
		"""False while rate-limited or with the queue over 90 % (sentry-sdk's monitor then samples down)."""
		return not (self.RateLimits.any_active() or self._queued_bytes > 0.9 * self.Options.queue_max_size)

	# State

	def pending(self) -> int:
		"""Envelopes handed over and neither delivered nor dropped yet."""
		with self._cond:
			return self._pending()

	def _pending(self) -> int:
		return len(self._incoming) + self._preparing + len(self._ready) + self._inflight

	@property
	def QueuedBytes(self) -> int:
		return self._queued_bytes

	# Capture

	def _capture_to_outbox(self, envelope: Envelope) -> None:
		assert self.Outbox is not None
		try:
			limits.fill_encoded(envelope)
			body = gzip_body(envelope.serialize(), self.Options.compress_level)
			categories, quantities = describe(envelope)
			entry, evicted = self.Outbox.write(body)
		except OSError as e:
			# The disk failed us: keep the envelope in memory rather than lose it.
			self.Losses.count("outbox_errors")
			now = time.monotonic()
			if self._outbox_error_said is None or now - self._outbox_error_said >= 60.0:  # a disk full: once a minute
				self._outbox_error_said = now
				L.warning(
					"Cannot write to the outbox {}: {}; kept in memory only".format(self.Outbox.Directory, e),
					extra={NO_EVENT: True},
				)
			self._incoming.append(envelope)
			self._wake()
			return
		self.Losses.count("captured")
		parcel = Parcel(None, entry.path, entry.size, categories, quantities, entry.created)
		with self._cond:
			if self._queued_bytes + entry.size <= self.Options.queue_max_size:
				parcel.body = body
				self._queued_bytes += entry.size
			self._ready.append(parcel)
			self._by_path[entry.path] = parcel
			evicted_parcels = [self._by_path.pop(e.path, None) for e in evicted]
			for p in evicted_parcels:
				if p is not None:
					p.evicted = True
			self._cond.notify()
		if evicted:
			quantities = [q for p in evicted_parcels if p is not None for q in (p.quantities or ())]
			self.Losses.dropped("outbox_full", len(evicted), quantities)

	def _load_outbox(self) -> None:
		assert self.Outbox is not None
		expired = self.Outbox.expired()
		if expired:
			self.Losses.dropped("too_old", len(expired))
		for entry in self.Outbox.files():
			parcel = Parcel(None, entry.path, entry.size, None, None, entry.created, cached=True)
			self._ready.append(parcel)
			self._by_path[entry.path] = parcel

	# Senders

	def _run(self) -> None:
		try:
			connection = self._connect()
		except Exception:  # checked when the transport was made; a sender that cannot connect must not vanish
			L.exception("A Sentry sender cannot make its connection; it stops", extra={NO_EVENT: True})
			return
		try:
			self._send_loop(connection)
		finally:
			connection.close()

	def _send_loop(self, connection: Connection | ProxyConnection) -> None:
		waited = False  # the last pipeline waited GATHER for its responses: new work came meanwhile, take it now
		while True:
			envelopes: list[Envelope] = []
			batch: list[Parcel] = []
			drops: list[tuple[str, Parcel]] = []
			with self._cond:
				while not self._stopping:
					if self._incoming:
						break
					parcel, wait = self._pick(drops)
					if parcel is not None:
						batch.append(parcel)
						break
					if drops:
						break
					self._waiting += 1
					try:
						self._cond.wait(IDLE_POLL if wait is None else min(wait, IDLE_POLL))
					finally:
						self._waiting -= 1
				else:
					return
				gather = not waited and bool(batch or self._incoming) and self._gather()
				waited = False
				if gather:
					self._gathering += 1
			self._drop(drops)
			try:
				if gather:
					time.sleep(GATHER)
				with self._cond:
					if gather:
						self._gathering -= 1
					while self._incoming and len(envelopes) < PIPELINE_MAX:
						envelopes.append(self._incoming.popleft())
					self._preparing += len(envelopes)
				for envelope in envelopes:
					try:
						self._prepare(envelope)
					except Exception:  # the next ones are still prepared
						L.exception("Preparing an envelope for Sentry failed unexpectedly", extra={NO_EVENT: True})
				with self._cond:
					if not batch:
						parcel, _ = self._pick(drops)
						if parcel is not None:
							batch.append(parcel)
					if batch:
						self._pick_more(batch, drops)
				self._drop(drops)
				if batch:
					waited = self._deliver(batch, connection)
			except Exception:  # never let a sender thread die: the queue would stall silently
				L.exception("Delivery to Sentry failed unexpectedly", extra={NO_EVENT: True})
				for parcel in batch:
					if not parcel.settled:
						self._done(parcel)

	def _gather(self) -> bool:
		"""Whether a sender should wait `GATHER` for more work before taking it (lock held)."""
		return (
			self._flushing == 0
			and self._shutdown_deadline is None
			and len(self._incoming) + len(self._ready) < PIPELINE_MAX
		)

	def _drop(self, drops: list[tuple[str, Parcel]]) -> None:
		for reason, dropped in drops:
			self._forget(dropped)
			self.Losses.dropped(reason, 1, dropped.quantities or ())
		if drops:
			drops.clear()
			with self._cond:
				self._settled.notify_all()

	def _pick_more(self, batch: list[Parcel], drops: list[tuple[str, Parcel]]) -> None:
		"""Add to ``batch`` the parcels that may go with it in one pipeline (lock held)."""
		if batch[0].body is None or time.monotonic() < self._pipelining_after:
			return
		size = batch[0].size
		while len(batch) < PIPELINE_MAX and size < PIPELINE_BYTES and self._ready:
			head = self._ready[0]
			if head.body is None or head.cached:  # read from the outbox first: one at a time
				return
			parcel, _ = self._pick(drops)
			if parcel is None:
				return
			batch.append(parcel)
			size += parcel.size

	def _pick(self, drops: list[tuple[str, Parcel]]) -> tuple[Parcel | None, float | None]:
		"""The next parcel that may be sent (lock held), or how long to wait for one."""
		now = time.monotonic()
		if now < self._backoff_until:
			return None, self._backoff_until - now
		wait: float | None = None
		oldest_allowed = time.time() - self.Options.outbox_max_age
		everything = self.RateLimits.blocked_until(())
		if everything and self._ready:
			# A limit on every category (a plain 429): nothing may go, only the head (the oldest) may expire.
			head = self._ready[0]
			if head.created < oldest_allowed:
				self._ready.popleft()
				self._release(head)
				drops.append(("rate_limit_expired", head))
				return None, 0.0
			return None, min(everything - now, head.created - oldest_allowed)
		for index, parcel in enumerate(self._ready):
			if parcel.evicted:  # its file went to keep the outbox within outbox_max_size (already counted)
				del self._ready[index]
				self._release(parcel)
				return None, 0.0
			blocked = self.RateLimits.blocked_until(parcel.categories or ())
			if parcel.created < oldest_allowed:
				del self._ready[index]
				self._release(parcel)
				drops.append(("rate_limit_expired" if blocked else "too_old", parcel))
				return None, 0.0
			if blocked:
				# Wake at the window's end, or when the envelope gets too old to wait any longer.
				until = min(blocked - now, parcel.created - oldest_allowed)
				wait = min(wait, until) if wait is not None else until
				continue
			if parcel.cached:
				if now < self._drain_next:
					wait = min(wait, self._drain_next - now) if wait is not None else self._drain_next - now
					continue
				self._drain_next = now + self.Options.drain_interval * random.uniform(0.5, 1.5)
			del self._ready[index]
			self._inflight += 1
			parcel.settled = False
			return parcel, None
		return None, wait

	def _release(self, parcel: Parcel) -> None:
		if parcel.body is not None:
			self._queued_bytes -= parcel.size
			parcel.body = None

	def _forget(self, parcel: Parcel) -> None:
		if parcel.path is not None and self.Outbox is not None:
			self._by_path.pop(parcel.path, None)
			self.Outbox.remove(parcel.path)

	def _prepare_loop(self) -> None:
		# Senders prepare envelopes when they are free; this thread does it while every sender waits on the
		# network (an endpoint that never answers) or when a backlog of PIPELINE_MAX builds up (capture wakes it
		# then), so what was handed over is compressed at once and the memory bound (queue_max_size, compressed
		# bytes) holds, instead of envelopes piling up uncompressed (several times their compressed size).
		while True:
			with self._cond:
				self._preparer_idle = True
				while not self._stopping and (
					not self._incoming or (len(self._incoming) < PIPELINE_MAX and (self._waiting or self._gathering))
				):
					self._prepare_wanted.wait(IDLE_POLL)
				self._preparer_idle = False
				if self._stopping:
					return
				envelope = self._incoming.popleft()
				self._preparing += 1
			try:
				self._prepare(envelope)
			except Exception:  # never let this thread die: the hand-over deque would only grow
				L.exception("Preparing an envelope for Sentry failed unexpectedly", extra={NO_EVENT: True})
			with self._cond:
				self._cond.notify()  # a sender for the parcel

	def _prepare(self, entry: Envelope | Serialized) -> None:
		full = False
		try:
			if isinstance(entry, Serialized):
				data, categories, quantities = entry
				with self._bytes_lock:
					self._incoming_bytes -= len(data)
			else:
				data = entry.serialize()
				categories, quantities = describe(entry)
			# A full queue (an endpoint that does not answer): dropped without compressing it first.
			full = self._queued_bytes + len(data) // MAX_COMPRESSION > self.Options.queue_max_size
			if not full:
				body = request_body(data, self.Options.compress_level)
				parcel = Parcel(body, None, len(body), categories, quantities, time.time())
				with self._cond:
					full = self._queued_bytes + parcel.size > self.Options.queue_max_size
					if not full:
						self._queued_bytes += parcel.size
						self._ready.append(parcel)
			if full:
				self.Losses.dropped("queue_full", 1, quantities)
			if categories:
				self.Losses.count("captured")
		finally:
			# Counted as pending until it is queued or counted as dropped (flush and tests see no gap).
			with self._cond:
				self._preparing -= 1
				# Flush waits on its own condition. The senders are not woken here: a sender that prepares takes the
				# parcels next itself, and the preparing thread wakes one after each (see _prepare_loop).
				self._settled.notify_all()

	def _deliver(self, batch: list[Parcel], connection: Connection | ProxyConnection) -> bool:
		"""
		Send the parcels of ``batch`` (pipelined when there are several) and settle each by its response. True when
		it waited `GATHER` before reading the responses (they arrive together; new envelopes gather meanwhile).
		"""
		bodies: list[bytes] = []
		sending: list[Parcel] = []
		for parcel in batch:
			body = self._body(parcel)
			if body is not None:
				bodies.append(body)
				sending.append(parcel)
		if not sending:
			return False
		if (
			self._incoming and not self._waiting and not self._gathering and self._cond.acquire(blocking=False)
		):  # every sender is busy: the preparing thread prepares meanwhile
			try:
				self._prepare_wanted.notify()
			finally:
				self._cond.release()
		with self._cond:
			wait = GATHER if len(bodies) > 1 and self._gather() else 0.0
		again: list[Parcel] = []  # back to the head of the queue, in their order, once all responses are read
		failure: list[str] = []  # why the endpoint failed (5xx, timeout, connection): a back-off round
		failed: list[Parcel] = []  # counted as retried
		answered = [0]  # responses acted on

		def on_responses(start: int, responses: list[Response]) -> None:
			# Settled as they are read: what the endpoint accepted is delivered even if it stops answering next.
			accepted: list[Parcel] = []
			for parcel, response in zip(sending[start:], responses, strict=False):
				if 200 <= response.status < 300 and "x-sentry-rate-limits" not in response.headers:
					accepted.append(parcel)  # the usual answer: settled together
					continue
				try:
					why = self._settle(parcel, response)
				except Exception:  # never raised into the reading: the next responses are still acted on
					L.exception("Settling an envelope for Sentry failed unexpectedly", extra={NO_EVENT: True})
					if not parcel.settled:
						self._done(parcel)
					continue
				if why is not None:
					again.append(parcel)
					if why:
						failure.append(why)
						failed.append(parcel)
			if accepted:
				self._accepted(accepted)
			answered[0] = start + len(responses)

		broken: Exception | None = None  # the unanswered ones failed: not even the first answered, or a timeout
		try:
			connection.post_many(self._headers, bodies, wait, on_responses)
		except Exception as e:  # not even the first one answered (OSError, ValueError; urllib3's through a proxy)
			broken = e
		unanswered = sending[answered[0] :]
		if unanswered and answered[0] and broken is None:
			interrupted = connection.Interrupted
			if interrupted is not None and not isinstance(interrupted, ConnectionError):
				# A timeout (or a malformed response) in the middle of a pipeline: the endpoint is in trouble.
				broken = interrupted
			elif connection.Answered < 2:
				# The endpoint closed the connection after answering one request: it takes one per connection
				# (HTTP/1.0, gunicorn's sync workers). One per request, until pipelining is tried again.
				with self._cond:
					self._pipelining_after = time.monotonic() + PIPELINING_RETRY
			# Otherwise it closed a connection that answered several (a keep-alive request limit: nginx, Apache):
			# the rest go again at once on a new one.
		if broken is not None:
			failure.append("{}: {}".format(type(broken).__name__, broken))
			failed.extend(unanswered)
		if failure:
			self._back_off(failure[0])
			self.Losses.count("retried", len(failed))
		if again or unanswered:
			self._requeue(again + unanswered)  # one call: the head stays the oldest (the expiry looks at it)
		return wait > 0

	def _body(self, parcel: Parcel) -> bytes | None:
		"""The request body of a parcel taken from the queue, or None when it got settled instead."""
		if parcel.evicted:  # its file went to keep the outbox within outbox_max_size since (already counted)
			self._done(parcel)
			return None
		body = parcel.body
		if body is not None and parcel.categories is not None:
			return body
		assert parcel.path is not None and self.Outbox is not None
		try:
			body = self.Outbox.read(parcel.path)
		except FileNotFoundError:  # evicted (already counted) or flushed by another tool
			self._done(parcel)
			return None
		if parcel.categories is None:
			try:
				envelope = outbox_module.decode(body)
			except outbox_module.CorruptEnvelope as e:
				target = self.Outbox.move_aside(parcel.path)
				self._by_path.pop(parcel.path, None)
				parcel.quantities = []
				self._done(parcel)
				self.Losses.dropped("corrupt", 1, detail=" ({}: {})".format(target, e))
				return None
			parcel.categories, parcel.quantities = describe(envelope)
			if self.RateLimits.blocked_until(parcel.categories):
				self._requeue([parcel])
				return None
		return body

	def _accepted(self, parcels: list[Parcel]) -> None:
		"""Settle parcels the endpoint accepted (2xx, no rate limits announced): one lock for all of them."""
		if self.Outbox is not None:
			for parcel in parcels:
				self._forget(parcel)
		with self._cond:
			self._failures = 0
			for parcel in parcels:
				parcel.settled = True
				self._release(parcel)
			self._inflight -= len(parcels)
			self._settled.notify_all()
		sent = sum(1 for parcel in parcels if parcel.quantities)
		if sent:
			self.Losses.count("sent", sent)
		self._maybe_report()

	def _settle(self, parcel: Parcel, response: Response) -> str | None:
		"""
		Act on the endpoint's response to one parcel. Returns None when it is settled; otherwise it must go back to
		the queue (the caller puts a pipeline's back together, in order): "" (429), or why the endpoint failed (5xx).
		"""
		status = response.status
		self.RateLimits.update(
			status, response.headers.get("x-sentry-rate-limits"), response.headers.get("retry-after")
		)
		if 200 <= status < 300:
			with self._cond:
				self._failures = 0
			self._forget(parcel)
			if parcel.quantities:
				self.Losses.count("sent")
			self._done(parcel)
			self._maybe_report()
		elif status == 429:
			self.Losses.count("rate_limited")
			return ""
		elif status >= 500:
			return "HTTP {}".format(status)
		else:
			self._forget(parcel)
			text = response.body[:200].decode("utf-8", "replace").strip()
			self._done(parcel)
			if parcel.quantities != []:  # [] is our own client report: no user envelope was lost
				self.Losses.dropped(
					"rejected_{}".format(status),
					1,
					parcel.quantities or (),
					detail=" ({})".format(text) if text else "",
				)
		return None

	def _done(self, parcel: Parcel) -> None:
		with self._cond:
			parcel.settled = True
			self._release(parcel)
			self._inflight -= 1
			self._settled.notify_all()

	def _requeue(self, parcels: list[Parcel]) -> None:
		"""Put parcels taken from the queue back at its head, in their order."""
		with self._cond:
			for parcel in parcels:
				parcel.settled = True
			self._inflight -= len(parcels)
			if self._killed:
				self._settled.notify_all()
				return
			self._ready.extendleft(reversed(parcels))
			self._cond.notify()
			self._settled.notify_all()

	def _back_off(self, why: str) -> None:
		"""The endpoint failed (connection, timeout, 5xx): the transport backs off (one round per failure)."""
		o = self.Options
		with self._cond:
			now = time.monotonic()
			if now >= self._backoff_until:  # the first failure of a round counts, not every request in flight
				self._failures += 1
				delay = min(o.retry_max, o.retry_initial * 2 ** (self._failures - 1)) * random.uniform(0.5, 1.0)
				self._backoff_until = now + delay
				first = self._failures == 1
			else:
				first = False
		if first:
			L.info(
				"Sentry at {} unreachable ({}); retrying with back-off.".format(self.parsed_dsn.host, why),
				extra={NO_EVENT: True},
			)  # type: ignore[union-attr]

	def _maybe_report(self, force: bool = False) -> None:
		if force or time.monotonic() - self._last_report > 30.0:
			self._queue_client_report()

	def _queue_client_report(self) -> None:
		if not self._send_client_reports or self._stopping:
			return
		item = self.Losses.client_report()
		self._last_report = time.monotonic()
		if item is None:
			return
		envelope = Envelope(items=[item])
		self._incoming.append(envelope)
		with self._cond:
			self._cond.notify()
