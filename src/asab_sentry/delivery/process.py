"""
The delivery process (``[sentry] delivery = process``): the HTTP delivery runs in a helper process.

Why: a Python process runs Python code on one core at a time (the interpreter lock). In an error storm the event
loop needs most of that core for capturing, and `DeliveryTransport`'s preparing and sender threads (compressing,
pipelined HTTP, acting on responses) need ~150-250 µs of it per envelope more: the loop stalls behind them, or the
delivery falls behind and the queue overflows. In this mode the service process keeps only the hand-over:

- ``capture_envelope`` (the event loop) appends the envelope, serialized by `transport.intake` as the in-process
  mode does it, to the *feed*, bounded in bytes by `INCOMING_FACTOR` x ``queue_max_size``, as the in-process mode
  bounds what waits uncompressed (over it: ``queue_full``, counted and said);
- one feeder thread writes the feed in batches to the delivery process's standard input (``os.write`` releases the
  interpreter lock while the pipe is full);
- one status thread reads what the delivery process tells: counters and drops (into `Losses`: the service's
  counters, client reports and once-a-minute lines stay where they were), its log lines (re-logged on the service's
  ``asab_sentry`` loggers, never as events), how much it holds, its rate limits, the answers to flush, shutdown and
  kill.

The delivery process (``python -c ... asab_sentry.delivery.process.main``, a fresh interpreter, not a fork: the
service's threads, locks and event loop do not come along) runs a `DeliveryTransport` with the same options:
compression, pipelining, rate limits, retries, client reports of its own losses. It ends when the service ends: at
the service's ``kill`` (sentry-sdk's exit), or when its standard input closes (the service died: it then delivers
what it holds within ``shutdown_timeout`` and exits).

When the delivery process ends unexpectedly, one line says so and counts what it held (``process_ended``); a new one
takes over what the feed holds. When it cannot start (no interpreter to start: ``sys.executable`` empty, a frozen
application), is not ready within `START_TIMEOUT` seconds, or ends within `STABLE_AFTER` seconds of its start twice in
a row, the delivery continues in the service's own threads (an in-process `DeliveryTransport` sharing `Losses`). A
fork of the service never writes to its parent's delivery process: its own envelopes go to an in-process delivery.

No outbox in this mode (`asab_sentry.settings` rejects the combination): the outbox's promise is that an envelope is
on disk when capture returns, which only the capturing process can keep.

Protocol. Service to delivery process, frames: kind (1 byte), length (4 bytes, big-endian), payload. ``E``: an
envelope: meta length (2 bytes), meta (JSON ``[categories, quantities]``), the serialized envelope. ``C``: a command
(JSON: ``start``, ``flush``, ``shutdown``, ``kill``). Delivery process to service: one JSON object per line.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import itertools
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import typing
import weakref

import sentry_sdk.transport
from sentry_sdk.consts import VERSION as SDK_VERSION
from sentry_sdk.consts import EndpointType
from sentry_sdk.envelope import Envelope

from .. import limits, scrub
from ..logging import NO_EVENT
from .http import connection_factory
from .losses import Losses
from .ratelimits import RateLimits
from .transport import (
	IDLE_POLL,
	INCOMING_FACTOR,
	MAX_INCOMING,
	DeliveryOptions,
	DeliveryTransport,
	Serialized,
	Unfinished,
	describe,
	finish_unfinished,
	intake,
	unfinished,
)

L = logging.getLogger("asab_sentry.delivery")

FRAME = struct.Struct("!cI")
META = struct.Struct("!H")

#: How much lower the delivery process's CPU priority is than the service's (``nice``): when the two compete for a
#: CPU, the service's event loop goes first (in an error storm on 2 CPUs, the loop's worst lag median went from 15.4
#: to 8.8 ms: docs/performance.md); the delivery process has the CPU the service leaves, and buffers (the pipe, the
#: feed). Clamped to 19 by the OS.
NICENESS = 10

#: The feeder, woken for one envelope, waits this long (s) for more before it writes: one write (and one hand-over
#: of the interpreter lock) per batch, not per envelope. Not while a flush or the exit waits.
FEED_GATHER = 0.01

#: With this many entries in the feed the feeder writes at once.
FEED_NOW = 64

#: The most bytes the feeder writes in one batch.
FEED_BATCH = 1024 * 1024

#: Pipe buffer asked for (Linux ``F_SETPIPE_SZ``; the default is 64 KiB): the feeder blocks less often.
PIPE_SIZE = 1024 * 1024

#: Seconds between two status messages of the delivery process (only when something changed).
STATUS_INTERVAL = 0.05

#: A delivery process that ends within this many seconds of its start twice in a row is not started again: the
#: delivery continues in the service's threads.
STABLE_AFTER = 10.0

#: A delivery process not ready this many seconds after its start (an interpreter that hangs at start, a program
#: that is not one) is ended: the delivery continues in the service's threads.
START_TIMEOUT = 30.0

#: Seconds the service waits for the delivery process's answer after a deadline it passed on (the answer's way).
ANSWER_GRACE = 0.25

#: Seconds the service waits for the delivery process to answer ``kill`` and exit.
KILL_WAIT = 2.0

#: Seconds between two client reports of the service's own losses (as `DeliveryTransport` sends them).
REPORT_INTERVAL = 30.0


_COMMAND_IDS = itertools.count(1)


class _Command:
	"""A command in the feed, and its answer."""

	__slots__ = ("Payload", "Id", "Child", "Answer", "Fallback")

	def __init__(self, payload: dict[str, typing.Any]):
		self.Payload = payload
		# Never reused: an answer that comes after its command gave up must not answer a later one (``id()`` of a
		# freed command is the address of the next one).
		self.Id = next(_COMMAND_IDS)
		self.Child: _Child | None = None  # the delivery process it was written to
		self.Answer: dict[str, typing.Any] | None = None
		self.Fallback = False  # it reached the feed's end after the delivery moved into this process


class _Child:
	"""One delivery process, as the service sees it."""

	def __init__(self, process: subprocess.Popen):
		self.Process = process
		self.Started = time.monotonic()
		self.Ready = False
		self.Ended = False
		self.Written = 0  # envelopes written to its standard input (client reports too)
		self.Received = 0  # envelopes it read (its last message)
		# Written but not known to be read: they go to the next delivery process if this one ends (their bytes still
		# count in the feed's bound until it says it read them).
		self.Unreceived: collections.deque[Serialized] = collections.deque()
		self.Unread = 0  # envelopes among them (client reports are not envelopes a user counts)
		# The batch the feeder took for it and is writing (still counted in the feed): whoever sees the end first puts
		# it back once, behind `Unreceived` (`ProcessDelivery._ended`).
		self.Writing: list[Serialized] = []
		self.Pending = 0  # envelopes it holds, not delivered or dropped yet (its last message)
		self.QueuedBytes = 0
		self.Healthy = True
		self.Failure: str | None = None  # why it could not start


def _child_command(root: str) -> list[str]:
	# The service's own import path, as it is now: a virtualenv, a checkout, and what a launcher added at run time
	# (PEX, Bazel, a zipapp's bootstrap); without the working directory (""), which the service may have and which
	# must not shadow modules here. -c rather than -m: no module is looked up before the path is set.
	path: list[str] = []
	for entry in sys.path:
		try:
			entry = os.fsdecode(entry)  # str, bytes or os.PathLike; anything else is not a path
		except TypeError:
			continue
		if entry and entry not in path:
			path.append(entry)
	if root not in path:
		path.insert(0, root)
	code = (
		"import sys\nsys.path[:] = {path!r}\nfrom asab_sentry.delivery.process import main\nsys.exit(main())\n"
	).format(path=path)
	return [sys.executable, "-c", code, "asab_sentry.delivery.process"]


class ProcessDelivery(sentry_sdk.transport.Transport):
	"""
	sentry-sdk transport that hands envelopes to a delivery process (see the module's description).

	Args:
		options: sentry-sdk's client options (at least ``dsn``); ``send_client_reports`` is honoured.
		delivery: the `DeliveryOptions` (the delivery process's `DeliveryTransport` gets them); no ``outbox``.

	Attributes:
		Options: the `DeliveryOptions`.
		Losses: counters (captured, sent, retried, dropped_<reason>): the service's and the delivery process's.
		RateLimits: the limits Sentry announced (as the delivery process last told them).
		Outbox: always None.
		Fallback: the in-process `DeliveryTransport` once the delivery process could not be kept running, else None.
		Pid: the process id of the current delivery process, or None.

	Raises:
		ValueError: no DSN, or ``delivery.outbox`` is set.
		asab_sentry.delivery.http.CertificatesError: as `DeliveryTransport` (checked here, at once).
	"""

	def __init__(self, options: dict[str, typing.Any], delivery: DeliveryOptions | None = None):
		super().__init__(options)
		self.Options = delivery or DeliveryOptions()
		if self.parsed_dsn is None:
			raise ValueError("ProcessDelivery needs a DSN")
		if self.Options.outbox is not None:
			raise ValueError("the delivery process does not take an outbox")
		auth = self.parsed_dsn.to_auth("sentry.python/{}".format(SDK_VERSION))
		connection_factory(auth.get_api_url(EndpointType.ENVELOPE), self.Options.request_timeout)  # may raise
		self._client_options = {
			"dsn": str(options["dsn"]),
			"send_client_reports": bool(options.get("send_client_reports", True)),
		}
		self._send_client_reports = self._client_options["send_client_reports"]
		self.Losses = Losses(where="Sentry at {}".format(self.parsed_dsn.host))
		self.RateLimits = RateLimits()
		self.Outbox = None
		self.Fallback: DeliveryTransport | None = None

		self._cond = threading.Condition()
		self._feed: collections.deque[Serialized | _Command] = collections.deque()
		self._feed_bytes = 0
		self._feed_envelopes = 0
		self._bytes_lock = threading.Lock()
		self._feeder_idle = False
		self._backlogged = False  # more waits for the delivery process than it keeps up with (see capture_envelope)
		self._urgent = 0  # flush/shutdown waiting: no gathering
		self._inflight = 0  # envelopes of the batch the feeder is writing (out of the feed, not yet written)
		self._killed = False
		self._exit_warned = False
		self._shutdown_deadline: float | None = None
		self._last_report = time.monotonic()
		self._quick_ends = 0  # consecutive delivery processes that ended within STABLE_AFTER
		self._meta: dict[tuple, bytes] = {}
		self._commands: list[_Command] = []  # waiting for their answers
		self._write_lock = threading.Lock()  # one writer of frames at a time: the feeder, or kill
		self._to_close: collections.deque[_Child] = collections.deque()  # see `_close_input`
		self._child: _Child | None = None
		self._forked = False  # this is a fork of the process that created it (see `_after_fork`)
		self._final_pass: dict[str, typing.Any] | None = None  # how its delivery process finishes events
		self._start_child()
		self._feeder = threading.Thread(target=self._feed_loop, name="asab-sentry-feeder", daemon=True)
		self._feeder.start()
		_INSTANCES.add(self)

	@property
	def Pid(self) -> int | None:
		child = self._child
		return child.Process.pid if child is not None and not child.Ended else None

	# sentry-sdk's Transport interface

	def capture_envelope(self, envelope: Envelope) -> None:
		"""Hand an envelope over: serialized (`intake`) and appended to the feed; no I/O, no compression."""
		fallback = self.Fallback
		if fallback is None and self._forked:
			fallback = self._forked_fallback()
		if fallback is not None:
			fallback.capture_envelope(envelope)
			return
		if self._killed or len(self._feed) >= MAX_INCOMING:
			self.Losses.dropped("shutdown" if self._killed else "queue_full", 1, describe(envelope)[1])
			return
		entry = unfinished(envelope) or intake(envelope)
		if not isinstance(entry, Serialized):
			# Not encoded by the final pass (sessions, check-ins, ... or sentry-sdk without SentryService): serialized
			# here, so that the feed is bounded in bytes.
			entry = Serialized(entry.serialize(), *describe(entry))
		size = len(entry.data)
		with self._bytes_lock:  # never held for more than an addition
			full = self._feed_bytes + size > INCOMING_FACTOR * self.Options.queue_max_size
			if not full:
				self._feed_bytes += size
				self._feed_envelopes += bool(entry.categories)
			waiting = self._feed_bytes
		# The delivery process finishes error events one at a time as it reads them: while more waits for it than a
		# queue's worth, the service finishes them itself (its own pace then slows the burst).
		backlogged = waiting > self.Options.queue_max_size
		if backlogged is not self._backlogged:
			self._backlogged = backlogged
			for final_pass in limits._active:
				final_pass.Backlogged = backlogged
		if full:
			self.Losses.dropped("queue_full", 1, entry.quantities)
			return
		self._feed.append(entry)
		if self._feeder_idle:
			self._wake()

	def finishes_as(self, final_pass: limits.FinalPass) -> bool:
		"""
		True when its delivery process finishes error events as ``final_pass`` would (the same scrubbing terms and
		size limits): it was started after ``final_pass`` was installed (`limits.install`), not e.g. given to
		SentryService ready-made (``transport=``) before the service configured ``[sentry] scrub_keys``.
		"""
		return self._final_pass is not None and self._final_pass == _final_pass_options(final_pass)

	def _wake(self) -> None:
		# Never waits on the lock: the feeder holds it only to look at the feed, and looks every IDLE_POLL.
		if self._cond.acquire(blocking=False):
			try:
				self._cond.notify_all()
			finally:
				self._cond.release()

	def flush(self, timeout: float, callback: typing.Any = None) -> None:
		"""Wait until everything handed over is delivered (or dropped), at most ``timeout`` seconds."""
		if self._forked:
			self._forked_fallback().flush(timeout)
			return
		deadline = time.monotonic() + max(0.0, timeout)
		if self._shutdown_deadline is not None:
			deadline = min(deadline, self._shutdown_deadline)
		self._ask("flush", deadline)

	def shutdown(self, timeout: float | None = None) -> int:
		"""
		Flush for the exit, as `DeliveryTransport.shutdown`: one exit deadline that later flushes share; one warning
		says what is left. Returns the number of envelopes still undelivered.
		"""
		timeout = self.Options.shutdown_timeout if timeout is None else timeout
		if self._forked:
			return self._forked_fallback().shutdown(timeout)
		if self._shutdown_deadline is None:
			self._shutdown_deadline = time.monotonic() + timeout
		answer = self._ask("shutdown", self._shutdown_deadline)
		if self.Fallback is not None:
			pending = self.pending()
			if pending and self.Fallback._exit_warned:
				self._exit_warned = True
		elif answer is not None:
			pending = int(answer.get("undelivered", 0)) + self._feed_envelopes
			child = self._child
			if child is not None:
				pending += child.Unread
		else:
			pending = self.pending()
		if pending and not self._exit_warned:
			self._say_undelivered(pending)
		return pending

	def kill(self) -> None:
		"""Stop the delivery process and the feeder; one warning says what was not delivered."""
		with self._cond:
			if self._killed:
				return
			self._killed = True
			entries = []
			while self._feed:  # one entry at a time: the loop may still append
				entries.append(self._feed.popleft())
			left = [e for e in entries if isinstance(e, Serialized) and e.categories]
			commands = list(self._commands)  # in the feed, or written and not answered: none will be
			with self._bytes_lock:
				self._feed_bytes = 0
				self._feed_envelopes = 0
			child = self._child
			for command in commands:
				command.Answer = {}
			self._cond.notify_all()
		undelivered = len(left)
		if child is not None and not child.Ended:
			answer = self._kill_child(child)
			if answer is not None:
				undelivered += int(answer.get("undelivered", 0))
			else:
				with self._cond:
					lost = child.Unread + child.Pending
				self.Losses.count("dropped_shutdown", lost)
				undelivered += lost
		with self._cond:
			# A batch the feeder took out of the feed and did not write before the kill (the delivery process
			# did not read it): nobody else counts it.
			inflight, self._inflight = self._inflight, 0
		if inflight:
			self.Losses.count("dropped_shutdown", inflight)
			undelivered += inflight
		if left:
			self.Losses.count("dropped_shutdown", len(left))
		fallback = self.Fallback
		if fallback is not None:
			undelivered += fallback.pending()
			if fallback._exit_warned:
				self._exit_warned = True
			fallback.kill()  # says its own
			if fallback._exit_warned:
				self._exit_warned = True
		if undelivered and not self._exit_warned:
			self._say_undelivered(undelivered)
		self.Losses.say_pending()

	# sentry-sdk's losses before the transport: as in-process (same ``_send_client_reports`` and ``Losses``).
	record_lost_event = DeliveryTransport.record_lost_event

	def is_healthy(self) -> bool:
		"""
		False while rate-limited, or with the feed or the delivery process's queue over 90 % of its bound (close to
		dropping, as in-process; sentry-sdk's monitor then samples down).
		"""
		if self.Fallback is not None:
			return self.Fallback.is_healthy()
		child = self._child
		child_ok = child is None or child.Healthy
		full = self._feed_bytes > 0.9 * INCOMING_FACTOR * self.Options.queue_max_size
		return child_ok and not (self.RateLimits.any_active() or full)

	# A fork of the service (os.fork, multiprocessing's fork start method)

	def _after_fork(self) -> None:
		"""
		In the fork: the delivery process, the feeder and the status thread are the parent's. The fork must never
		write to that delivery process (its exit would end it: the parent's delivery would be cut) and has no feeder:
		its own envelopes go to an in-process delivery, started when it first needs one. What the feed held is the
		parent's to deliver. The locks may have been held by the parent's threads at the fork: new ones.
		"""
		self._forked = True
		_finish_here()
		self._cond = threading.Condition()
		self._write_lock = threading.Lock()
		self._bytes_lock = threading.Lock()
		self._to_close = collections.deque()  # the parent's to close
		self._feed = collections.deque()
		self._feed_bytes = self._feed_envelopes = self._inflight = self._urgent = 0
		self._commands = []
		self._child = None  # its pipes stay open here (closing them could block on the status thread's lock)
		self.Fallback = None  # an in-process delivery of the parent's has no threads here: the fork gets its own
		self.Losses._lock = threading.Lock()
		self.Losses._unsaid.clear()  # the parent says and reports its losses; the fork its own
		self.Losses._discarded.clear()
		self.RateLimits = RateLimits()
		self._fork_lock = threading.Lock()

	def _forked_fallback(self) -> DeliveryTransport:
		with self._fork_lock:
			if self.Fallback is None:
				fallback = DeliveryTransport(self._client_options, self.Options, losses=self.Losses)
				self.RateLimits = fallback.RateLimits
				self.Fallback = fallback
			return self.Fallback

	# State

	def pending(self) -> int:
		"""Envelopes handed over and neither delivered nor dropped yet (the delivery process's as it last told)."""
		n = self._feed_envelopes
		child = self._child
		if child is not None and not child.Ended:
			n += child.Unread + child.Pending
		if self.Fallback is not None:
			n += self.Fallback.pending()
		return n

	@property
	def QueuedBytes(self) -> int:
		"""Bytes waiting in the feed plus the compressed bytes the delivery process holds."""
		n = self._feed_bytes
		child = self._child
		if child is not None and not child.Ended:
			n += child.QueuedBytes
		if self.Fallback is not None:
			n += self.Fallback.QueuedBytes
		return n

	# Commands

	def _ask(self, op: str, deadline: float) -> dict[str, typing.Any] | None:
		"""Put ``op`` in the feed behind everything handed over; its answer, or None (deadline, no process)."""
		self._queue_client_report()
		command = _Command({"op": op, "deadline": deadline})
		with self._cond:
			if self._killed:
				return None
			self._commands.append(command)
			self._feed.append(command)
			self._urgent += 1
			self._cond.notify_all()
			try:
				while command.Answer is None and not command.Fallback:
					if command.Child is not None and command.Child.Ended:
						# Its delivery process ended before it answered: ask the next one, or the fallback.
						command.Child = None
						self._feed.appendleft(command)
						self._cond.notify_all()
					left = deadline + (ANSWER_GRACE if command.Child is not None else 0.0) - time.monotonic()
					if left <= 0:
						if command in self._feed:
							self._feed.remove(command)
						return None
					self._cond.wait(min(left, IDLE_POLL))
			finally:
				self._urgent -= 1
				self._commands.remove(command)
		if command.Fallback and self.Fallback is not None:
			left = deadline - time.monotonic()
			if op == "shutdown":
				self.Fallback.shutdown(max(0.0, left))
			else:
				self.Fallback.flush(max(0.0, left))
			return None
		return command.Answer

	def _queue_client_report(self) -> None:
		"""The service's own losses (queue_full in the feed, sentry-sdk's) as a client report, through the feed."""
		self._last_report = time.monotonic()
		if not self._send_client_reports or self.Fallback is not None:
			return
		item = self.Losses.client_report()
		if item is None:
			return
		self._feed.append(Serialized(Envelope(items=[item]).serialize(), frozenset(), []))

	def _say_undelivered(self, n: int) -> None:
		self._exit_warned = True
		L.warning(
			"{} envelope(s) not delivered to {} within shutdown_timeout={:g}s: dropped (no [sentry] outbox).".format(
				n, self.Losses.Where, self.Options.shutdown_timeout
			),
			extra={NO_EVENT: True},
		)

	# The feeder

	def _feed_loop(self) -> None:
		while True:
			try:
				if not self._feed_once():
					return
			except Exception:  # never let the feeder die: the feed would only grow
				L.exception(
					"Handing envelopes to the Sentry delivery process failed unexpectedly", extra={NO_EVENT: True}
				)
				time.sleep(IDLE_POLL)

	def _feed_once(self) -> bool:
		with self._cond:
			while not self._feed and not self._killed:
				self._feeder_idle = True
				self._cond.wait(IDLE_POLL)
				self._feeder_idle = False
				if time.monotonic() - self._last_report > REPORT_INTERVAL:
					self._queue_client_report()
			if self._killed:
				return False
			urgent = self._urgent
		if not urgent and len(self._feed) < FEED_NOW:
			time.sleep(FEED_GATHER)
		fallback = self.Fallback
		if fallback is not None:
			self._to_fallback(fallback)
			return True
		child = self._child
		batch: list[Serialized | _Command] = []
		chunks: list[bytes] = []
		size = envelopes = frames = 0
		with self._cond:  # kill sees every envelope either in the feed or in the batch (`_inflight`)
			if child is None or child.Ended:
				self._cond.wait(IDLE_POLL)  # a new one is being started
				return True
			while self._feed and size < FEED_BATCH and not self._killed:
				entry = self._feed.popleft()
				batch.append(entry)
				if isinstance(entry, _Command):
					entry.Child = child
					payload = json.dumps(dict(entry.Payload, id=entry.Id)).encode()
					chunks.append(FRAME.pack(b"C", len(payload)))
					chunks.append(payload)
					size += len(payload)
					continue
				data, categories, quantities = entry
				frames += 1
				if categories:
					envelopes += 1
				meta = self._meta_of(categories, quantities)
				kind = b"U" if type(entry) is Unfinished else b"E"
				chunks.append(FRAME.pack(kind, META.size + len(meta) + len(data)))
				chunks.append(META.pack(len(meta)))
				chunks.append(meta)
				chunks.append(data)
				size += len(data)
			self._inflight = envelopes
			child.Writing = [entry for entry in batch if isinstance(entry, Serialized)]
		try:
			with self._write_lock:
				try:
					if self._killed:
						raise ValueError("killed")
					if child.Ended:
						raise OSError("ended")  # its end was seen meanwhile, and the batch put back
					_write_all(child.Process.stdin.fileno(), b"".join(chunks))  # type: ignore[union-attr]
					with self._cond:  # under the write lock: kill's answer covers the batch exactly when this is done
						self._inflight = 0
						self._cond.notify_all()
						if not child.Ended:  # (an end seen meanwhile put the batch back in the feed)
							child.Written += frames
							child.Unreceived.extend(child.Writing)
							child.Writing = []
							child.Unread += envelopes
							if not self._killed:  # (kill emptied the count)
								with self._bytes_lock:
									self._feed_envelopes -= envelopes
				finally:
					self._close_pending()
		except (OSError, ValueError):
			# The delivery process is gone: `_ended` puts the batch back (once: its status thread may have seen the end
			# first), for the next one or this process's threads.
			with self._cond:
				if self._killed:
					return False  # kill counted the batch (in the feed, or `_inflight`)
			self._ended(child)  # (a kill meanwhile counts the batch as `_inflight`)
		return True

	def _meta_of(self, categories: frozenset[str], quantities: list[tuple[str, int]]) -> bytes:
		key = (categories, tuple(quantities))
		meta = self._meta.get(key)
		if meta is None:
			# Summed per category (what a client report counts): bounded by the categories, not by the items (the
			# frame gives the meta 2 bytes of length; an envelope may hold thousands of attachments).
			totals: collections.Counter[str] = collections.Counter()
			for category, n in quantities:
				totals[category] += n
			meta = json.dumps([sorted(categories), sorted(totals.items())]).encode()
			if len(self._meta) < 1000:
				self._meta[key] = meta
		return meta

	def _to_fallback(self, fallback: DeliveryTransport) -> None:
		"""Hand what the feed holds to the in-process delivery."""
		while self._feed:
			entry = self._feed.popleft()
			if isinstance(entry, _Command):
				with self._cond:
					entry.Fallback = True
					self._cond.notify_all()
				continue
			if entry.categories:
				with self._bytes_lock:
					self._feed_envelopes -= 1
					self._feed_bytes -= len(entry.data)
			fallback.hand_over(entry)

	def _close_input(self, child: _Child) -> None:
		"""
		Close the delivery process's standard input, never while a frame is being written to it: the writer would go
		on with the same descriptor number, which the next pipe (the next delivery process's) or file may have taken.
		"""
		if self._write_lock.acquire(blocking=False):
			try:
				_close(child)
			finally:
				self._write_lock.release()
		else:
			self._to_close.append(child)  # the writer closes it when its write returned

	def _close_pending(self) -> None:
		"""(With the write lock.) Close the inputs that could not be closed while a frame was being written."""
		while self._to_close:
			_close(self._to_close.popleft())

	# The delivery process

	def _start_child(self) -> None:
		root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
		if getattr(sys, "frozen", False):
			# PyInstaller, cx_Freeze, ...: sys.executable is the application itself, which `-c` would start again.
			self._fall_back("the Sentry delivery process cannot start (a frozen application has no Python interpreter)")
			return
		if not sys.executable:
			# An embedded interpreter: None or "" (https://docs.python.org/3/library/sys.html#sys.executable).
			self._fall_back("the Sentry delivery process cannot start (sys.executable is {!r})".format(sys.executable))
			return
		try:
			process = subprocess.Popen(
				_child_command(root), stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
			)
		except (OSError, ValueError) as e:
			self._fall_back("the Sentry delivery process cannot start ({}: {})".format(type(e).__name__, e))
			return
		child = _Child(process)
		fd = process.stdin.fileno()  # type: ignore[union-attr]
		try:
			fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
		except OSError:
			pass  # the system's limit (/proc/sys/fs/pipe-max-size) or not Linux: the default buffer
		start = {
			"op": "start",
			"options": self._client_options,
			"delivery": dataclasses.asdict(self.Options),
			"where": self.Losses.Where,
			"final_pass": _final_pass_options(),
		}
		self._final_pass = start["final_pass"]
		payload = json.dumps(start).encode()
		try:
			_write_all(fd, FRAME.pack(b"C", len(payload)) + payload)
		except OSError:
			pass  # it ended already: its status thread sees the end
		with self._cond:
			killed = self._killed
			if not killed:
				self._child = child
				self._cond.notify_all()
		if killed:  # the exit came meanwhile: it ends at once (its input closes, it holds nothing)
			_close(child)
			return
		threading.Thread(target=self._read_status, args=(child,), name="asab-sentry-status", daemon=True).start()
		timer = threading.Timer(START_TIMEOUT, self._not_ready, args=(child,))
		timer.daemon = True
		timer.start()

	def _not_ready(self, child: _Child) -> None:
		"""Ends a delivery process that did not say it is ready: its status thread sees the end (and falls back)."""
		with self._cond:
			if child.Ready or child.Ended or self._killed:
				return
			child.Failure = "not ready within {:g} s".format(START_TIMEOUT)
		try:
			child.Process.kill()
		except OSError:
			pass

	def _read_status(self, child: _Child) -> None:
		stream = child.Process.stdout
		assert stream is not None
		try:
			for line in stream:
				try:
					message = json.loads(line)
				except ValueError:
					continue
				try:
					self._on_message(child, message)
				except Exception:
					L.exception("A message of the Sentry delivery process was not understood", extra={NO_EVENT: True})
		except (OSError, ValueError):
			pass
		self._ended(child)

	def _on_message(self, child: _Child, message: dict[str, typing.Any]) -> None:
		for name, n in (message.get("counts") or {}).items():
			self.Losses.count(name, int(n))
		for reason, n, detail in message.get("drops") or ():
			self.Losses.dropped(reason, int(n), (), detail)
		kind = message.get("t")
		if kind == "log":
			name = str(message.get("name") or "")
			logger = logging.getLogger(name if name.startswith("asab_sentry") else "asab_sentry.delivery")
			logger.log(int(message.get("level", logging.WARNING)), str(message.get("msg")), extra={NO_EVENT: True})
		limits = message.get("limits")
		if limits is not None:
			self.RateLimits.adopt({str(k): float(v) for k, v in limits.items()})
		read = 0  # bytes of envelopes it now says it read: they leave the feed's bound
		with self._cond:
			if "received" in message:
				received = int(message["received"])
				for _ in range(min(received - child.Received, len(child.Unreceived))):
					entry = child.Unreceived.popleft()
					if entry.categories:
						read += len(entry.data)
						child.Unread -= 1
				child.Received = received
				child.Pending = int(message["pending"])
				child.QueuedBytes = int(message.get("bytes", 0))
				child.Healthy = bool(message.get("healthy", True))
			if kind == "ready":
				child.Ready = True
			elif kind == "failed":
				child.Failure = str(message.get("error"))
			elif kind == "answer":
				for command in self._commands:
					if command.Id == message.get("id"):
						command.Answer = message
			self._cond.notify_all()
		if read:
			with self._bytes_lock:
				self._feed_bytes -= read

	def _kill_child(self, child: _Child) -> dict[str, typing.Any] | None:
		"""Ask the delivery process to stop (it counts what it still holds); its answer, or None."""
		command = _Command({"op": "kill"})
		payload = json.dumps(dict(command.Payload, id=command.Id)).encode()
		with self._cond:
			self._commands.append(command)
		deadline = time.monotonic() + KILL_WAIT  # the whole kill: the exit deadline has passed already
		try:
			# The feeder may be writing (a slow delivery process): wait for it, a while.
			if not self._write_lock.acquire(timeout=KILL_WAIT):
				return None
			try:
				fd = child.Process.stdin.fileno()  # type: ignore[union-attr]
				# A full pipe (a stopped or hung delivery process): no waiting to write; it would not answer.
				os.set_blocking(fd, False)
				_write_all(fd, FRAME.pack(b"C", len(payload)) + payload)
			except (OSError, ValueError):
				return None
			finally:
				self._write_lock.release()
			with self._cond:
				while command.Answer is None and not child.Ended and time.monotonic() < deadline:
					self._cond.wait(0.05)
			return command.Answer
		finally:
			with self._cond:
				self._commands.remove(command)
			self._close_input(child)
			try:
				# It answered: it ends by itself at once. It did not: it is not waited for any longer.
				child.Process.wait(timeout=KILL_WAIT if command.Answer is not None else 0.0)
			except subprocess.TimeoutExpired:
				child.Process.kill()
				try:
					child.Process.wait(timeout=KILL_WAIT)
				except subprocess.TimeoutExpired:
					pass

	def _ended(self, child: _Child) -> None:
		"""The delivery process ended (its output closed, or writing to it failed): say it, count, carry on."""
		with self._cond:
			if child.Ended:
				return
			child.Ended = True
			self._cond.notify_all()
			if self._killed:
				return
			# What it did not read goes to the next one, in the order it was handed over: what was written to it, then
			# the batch being written (still counted in the feed); what it read and held is lost.
			written: list[Serialized] = list(child.Unreceived)
			again: list[Serialized | _Command] = [*written, *child.Writing]
			if child.Writing:
				self._inflight = 0  # the feeder's batch, back in the feed: a kill counts it there, once
			child.Unreceived.clear()
			child.Writing = []
			child.Unread = 0
			# Its unanswered flush/shutdown commands go behind those envelopes (a flush answered before them would
			# return before they are delivered); each once, whether it was written or in the batch being written.
			commands = [c for c in self._commands if c.Child is child and c.Answer is None]
			for command in commands:
				command.Child = None
			self._feed.extendleft(reversed(again + commands))
			with self._bytes_lock:
				self._feed_envelopes += sum(1 for entry in written if entry.categories)
			lost = child.Pending
			lived = time.monotonic() - child.Started
			ready = child.Ready
			failure = child.Failure
		try:
			code = child.Process.wait(timeout=5.0)
		except subprocess.TimeoutExpired:
			child.Process.kill()
			code = child.Process.wait()
		self._close_input(child)
		how = "killed by signal {}".format(-code) if code < 0 else "exit code {}".format(code)
		if failure is not None:
			how += ": {}".format(failure)
		if lost:
			self.Losses.count("dropped_process_ended", lost)
		self._quick_ends = self._quick_ends + 1 if lived < STABLE_AFTER else 0
		what = "the Sentry delivery process (pid {}) ended unexpectedly ({}){}".format(
			child.Process.pid,
			how,
			"; {} envelope(s) it had not delivered are lost".format(lost) if lost else "",
		)
		if not ready or failure is not None or self._quick_ends >= 2:
			self._fall_back(what)
			return
		L.warning("{}; a new one takes over.".format(what[0].upper() + what[1:]), extra={NO_EVENT: True})
		self._start_child()

	def _fall_back(self, why: str) -> None:
		"""The delivery continues in this process's threads (an in-process `DeliveryTransport` sharing `Losses`)."""
		L.warning(
			"{}; delivery continues in the service's own threads.".format(why[0].upper() + why[1:]),
			extra={NO_EVENT: True},
		)
		fallback = DeliveryTransport(self._client_options, self.Options, losses=self.Losses)
		if self._shutdown_deadline is not None:
			fallback._shutdown_deadline = self._shutdown_deadline
		_finish_here()
		with self._cond:
			self.RateLimits = fallback.RateLimits
			self.Fallback = fallback
			self._child = None
			self._cond.notify_all()


#: Every `ProcessDelivery` of this process: a fork marks them (`ProcessDelivery._after_fork`).
_INSTANCES: weakref.WeakSet[ProcessDelivery] = weakref.WeakSet()


def _finish_here() -> None:
	"""No delivery process to finish error events any more: the service's final pass does them at once again."""
	for final_pass in limits._active:
		final_pass.Defer = False


def _final_pass_options(final_pass: limits.FinalPass | None = None) -> dict[str, typing.Any]:
	"""
	What the delivery process needs to finish ``final_pass`` (by default the running service's) as it would
	(`limits.FinalPass.finish`).
	"""
	if final_pass is None:
		final_pass = limits._active[0] if limits._active else limits.FinalPass()
	scrubber = final_pass.Scrubber or scrub.active()
	return {"terms": list(scrubber.Terms), "max_bytes": final_pass.MaxBytes, "max_compressed": final_pass.MaxCompressed}


def _final_pass_of(options: dict[str, typing.Any] | None) -> limits.FinalPass:
	options = options or {}
	return limits.FinalPass(
		scrub.Scrubber(options.get("terms", ())),
		max_bytes=int(options.get("max_bytes", limits.MAX_EVENT_BYTES)),
		max_compressed=int(options.get("max_compressed", limits.MAX_COMPRESSED_BYTES)),
		keep_encoding=True,
	)


def _after_fork_in_child() -> None:
	for transport in list(_INSTANCES):
		transport._after_fork()


if hasattr(os, "register_at_fork"):
	os.register_at_fork(after_in_child=_after_fork_in_child)


def _write_all(fd: int, data: bytes) -> None:
	view = memoryview(data)
	while view:
		written = os.write(fd, view)
		view = view[written:]


def _close(child: _Child) -> None:
	for stream in (child.Process.stdin,):
		try:
			if stream is not None:
				stream.close()
		except OSError:
			pass


# ---------------------------------------------------------------------------------------------------------------
# The delivery process's side


class _Relay:
	"""What the delivery process tells the service: one JSON object per line on its (duplicated) standard output."""

	def __init__(self, fd: int):
		self._fd = fd
		self._lock = threading.Lock()  # the counters (taken by the transport's threads)
		self._send_lock = threading.Lock()  # the messages, in order, each with the state when it was written
		self._counts: collections.Counter[str] = collections.Counter()
		self._drops: collections.Counter[tuple[str, str]] = collections.Counter()
		self.Received = 0
		self.Transport: DeliveryTransport | None = None
		self._last: tuple | None = None

	def counted(self, name: str, n: int) -> None:
		with self._lock:
			self._counts[name] += n

	def dropped(self, reason: str, n: int, detail: str) -> None:
		with self._lock:
			self._drops[reason, detail] += n

	def send(self, message: dict[str, typing.Any], status: bool = True) -> None:
		"""Send ``message`` with the counts, drops and state gathered since the last one (under one lock: in order)."""
		with self._send_lock:
			if status:
				self._status(message)
			line = (json.dumps(message) + "\n").encode()
			try:
				_write_all(self._fd, line)
			except OSError:
				pass  # the service is gone: its end of the pipe is closed

	def _status(self, message: dict[str, typing.Any]) -> None:
		# The transport's state first (its lock), then the counters (ours): never one lock inside the other.
		transport = self.Transport
		if transport is not None:
			message["received"] = self.Received
			message["pending"] = transport.pending()
			message["bytes"] = transport.QueuedBytes
			message["healthy"] = transport.is_healthy()
			message["limits"] = transport.RateLimits.windows()
		with self._lock:
			if self._counts:
				message["counts"] = dict(self._counts)
				self._counts.clear()
			if self._drops:
				message["drops"] = [[reason, n, detail] for (reason, detail), n in self._drops.items()]
				self._drops.clear()

	def changed(self) -> bool:
		transport = self.Transport
		state = (
			self.Received,
			transport.pending() if transport is not None else 0,
			transport.RateLimits.windows().__repr__() if transport is not None else "",
		)
		with self._lock:
			news = bool(self._counts or self._drops)
		if news or state != self._last:
			self._last = state
			return True
		return False


class _RelayedLosses(Losses):
	"""The delivery process's `Losses`: counts and drops go to the service (which says them); client reports stay."""

	def __init__(self, relay: _Relay, where: str):
		super().__init__(where=where)
		self._relay = relay

	def count(self, name: str, n: int = 1) -> None:
		super().count(name, n)
		self._relay.counted(name, n)

	def dropped(
		self, reason: str, envelopes: int = 1, quantities: typing.Iterable[tuple[str, int]] = (), detail: str = ""
	) -> None:
		super().dropped(reason, envelopes, quantities, detail)
		self._relay.dropped(reason, envelopes, detail)

	def _warn(self, reason: str, detail: str) -> None:
		with self._lock:
			self._unsaid.pop(reason, None)  # the service says it

	def say_pending(self) -> None:
		pass


class _RelayHandler(logging.Handler):
	"""The delivery process's log lines (asab_sentry loggers), re-logged by the service."""

	def __init__(self, relay: _Relay):
		super().__init__(logging.INFO)
		self._relay = relay

	def emit(self, record: logging.LogRecord) -> None:
		try:
			text = record.getMessage()
			if record.exc_info:
				text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
			self._relay.send({"t": "log", "level": record.levelno, "name": record.name, "msg": text}, status=False)
		except Exception:
			pass


class _ChildTransport(DeliveryTransport):
	"""The delivery process's transport: the service says the exit's line (with what its feed still held)."""

	def _say_undelivered(self, n: int, memory_only: int = 0) -> None:
		self._exit_warned = True


def _frames(fd: int) -> typing.Iterator[tuple[bytes, memoryview]]:
	buffer = bytearray()
	start = 0
	while True:
		while len(buffer) - start >= FRAME.size:
			kind, length = FRAME.unpack_from(buffer, start)
			end = start + FRAME.size + length
			if len(buffer) < end:
				break
			yield kind, memoryview(bytes(memoryview(buffer)[start + FRAME.size : end]))
			start = end
		del buffer[:start]  # once per read, not per frame
		start = 0
		chunk = os.read(fd, 1024 * 1024)
		if not chunk:
			return
		buffer += chunk


def main() -> int:
	"""The delivery process: read envelopes and commands from standard input until ``kill`` or its end."""
	out = os.dup(1)
	os.dup2(2, 1)  # a stray print goes to standard error, not into the messages
	# Before any thread starts (on Linux each thread has its own and inherits its creator's).
	try:
		os.nice(NICENESS)
	except OSError:
		pass
	# Ctrl-C in a terminal and systemd's stop signal reach every process of the service: the service decides when
	# this one ends (kill, or its end: the standard input closes), after it had its chance to deliver.
	signal.signal(signal.SIGINT, signal.SIG_IGN)
	signal.signal(signal.SIGTERM, signal.SIG_IGN)
	# A closed terminal sends SIGHUP to every process of the service too; asab's Application catches it (and
	# carries on), so must this one.
	signal.signal(signal.SIGHUP, signal.SIG_IGN)
	relay = _Relay(out)
	logger = logging.getLogger("asab_sentry")
	logger.handlers[:] = [_RelayHandler(relay)]
	logger.setLevel(logging.INFO)
	logger.propagate = False
	frames = _frames(0)
	try:
		kind, payload = next(frames)
		start = json.loads(bytes(payload))
		assert kind == b"C" and start["op"] == "start"
		delivery = DeliveryOptions(**start["delivery"])
		losses = _RelayedLosses(relay, start.get("where", "Sentry"))
		transport = _ChildTransport(start["options"], delivery, losses=losses)
		final_pass = _final_pass_of(start.get("final_pass"))
	except StopIteration:
		return 0
	except Exception as e:
		relay.send({"t": "failed", "error": "{}: {}".format(type(e).__name__, e)}, status=False)
		return 1
	relay.Transport = transport
	relay.send({"t": "ready", "pid": os.getpid()})
	parent = os.getppid()
	threading.Thread(target=_status_loop, args=(relay, transport, parent), daemon=True).start()

	def answer(command: dict[str, typing.Any]) -> None:
		left = max(0.0, float(command.get("deadline", 0.0)) - time.monotonic())
		pending = 0
		try:
			if command["op"] == "shutdown":
				pending = transport.shutdown(left)
			else:
				transport.flush(left)
				pending = transport.pending()
		finally:
			relay.send({"t": "answer", "id": command.get("id"), "undelivered": pending})

	for kind, payload in frames:
		if kind == b"E" or kind == b"U":
			(size,) = META.unpack_from(payload)
			categories, quantities = json.loads(bytes(payload[META.size : META.size + size]))
			data = bytes(payload[META.size + size :])
			relay.Received += 1
			if kind == b"U":  # an error event whose final pass is done here, off the service's interpreter lock
				data = finish_unfinished(data, final_pass)
			transport.hand_over(Serialized(data, frozenset(categories), [tuple(q) for q in quantities]))
			continue
		command = json.loads(bytes(payload))
		if command["op"] in ("flush", "shutdown"):
			threading.Thread(target=answer, args=(command,), daemon=True).start()
		elif command["op"] == "kill":
			before = transport.Losses.Counters["dropped_shutdown"]
			transport.kill()
			undelivered = transport.Losses.Counters["dropped_shutdown"] - before
			relay.send({"t": "answer", "id": command.get("id"), "undelivered": undelivered})
			return 0
	# The service ended without a kill (it crashed, or was killed): deliver what is here, then end.
	transport.shutdown()
	transport.kill()
	return 0


def _status_loop(relay: _Relay, transport: DeliveryTransport, parent: int) -> None:
	while True:
		time.sleep(STATUS_INTERVAL)
		if os.getppid() != parent:
			# The service is gone but the pipe is still open (a fork of it holds it): deliver, then end.
			transport.shutdown()
			transport.kill()
			os._exit(0)
		if relay.changed():
			relay.send({"t": "status"})


if __name__ == "__main__":
	sys.exit(main())
