"""
Delivery of envelopes.

`SpotlightTransport` sends every envelope to a Spotlight-compatible viewer (``[sentry] spotlight``)
from a background thread. sentry-sdk's own Spotlight support posts synchronously in the capturing
thread, which in an ASAB service is the event loop; this one never blocks the caller.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import typing
import urllib.request

import sentry_sdk.transport
from sentry_sdk.envelope import Envelope

from .. import notices
from ..logging import NO_EVENT

L = logging.getLogger(__name__)


class SpotlightTransport(sentry_sdk.transport.Transport):
	"""
	Forwards envelopes to a Spotlight URL, and to ``upstream`` (the normal DSN transport) when there is one.

	The queue is bounded; when it is full, envelopes for Spotlight are dropped and counted in
	`Dropped` (Spotlight is a development tool: the upstream delivery is never affected).
	"""

	def __init__(
		self,
		options: dict[str, typing.Any],
		url: str,
		upstream: sentry_sdk.transport.Transport | None,
		queue_size: int = 1000,
		timeout: float = 5.0,
	):
		super().__init__(options)
		self.Url = url
		self.Upstream = upstream
		self.Timeout = timeout
		self.Dropped = 0
		self.Failed = 0
		self._queue: queue.Queue[Envelope | None] = queue.Queue(maxsize=queue_size)
		self._idle = threading.Condition()
		self._pending = 0
		# The exit's deadline (`shutdown`): later flushes (sentry-sdk's atexit hook) share it, as the delivery's do.
		self._deadline: float | None = None
		self._thread = threading.Thread(target=self._run, name="asab-sentry-spotlight", daemon=True)
		self._thread.start()

	def capture_envelope(self, envelope: Envelope) -> None:
		if self.Upstream is not None:
			self.Upstream.capture_envelope(envelope)
		# Serialized in the Spotlight thread: the capturing thread (the event loop) only hands it over.
		with self._idle:
			try:
				self._queue.put_nowait(envelope)
			except queue.Full:
				self.Dropped += 1
				notices.say(
					"spotlight queue full",
					"Spotlight at {} is not keeping up: {} envelope(s) not shown there so far (queue of {} full); "
					"delivery to Sentry is not affected.".format(self.Url, self.Dropped, self._queue.maxsize),
					logging.WARNING,
					L,
				)
				return
			self._pending += 1

	def _run(self) -> None:
		warned = False
		while True:
			envelope = self._queue.get()
			if envelope is None:
				return
			try:
				body = envelope.serialize()
				request = urllib.request.Request(
					self.Url, data=body, method="POST", headers={"Content-Type": "application/x-sentry-envelope"}
				)
				with urllib.request.urlopen(request, timeout=self.Timeout) as response:
					response.read()
				warned = False
			except Exception as e:
				self.Failed += 1
				if not warned:
					L.warning("Cannot send to Spotlight at {}: {}".format(self.Url, e), extra={NO_EVENT: True})
					warned = True
			finally:
				with self._idle:
					self._pending -= 1
					self._idle.notify_all()

	def flush(self, timeout: float, callback: typing.Any = None) -> None:
		if self.Upstream is not None:
			self.Upstream.flush(timeout, callback)
		self._wait(timeout)

	def _wait(self, timeout: float) -> int:
		"""Wait until Spotlight has every envelope, at most ``timeout`` and not past the exit's deadline."""
		deadline = time.monotonic() + max(0.0, timeout)
		if self._deadline is not None:
			deadline = min(deadline, self._deadline)
		with self._idle:
			self._idle.wait_for(lambda: self._pending == 0, timeout=max(0.0, deadline - time.monotonic()))
			return self._pending

	def shutdown(self, timeout: float) -> None:
		"""
		The exit (SentryService.finalize, beside the delivery's own shutdown): waits at most ``timeout`` for
		Spotlight, starts the deadline later flushes share (the exit never waits twice) and says in one line how
		many envelopes Spotlight did not get.
		"""
		if self._deadline is None:
			self._deadline = time.monotonic() + max(0.0, timeout)
		pending = self._wait(timeout)
		if pending:
			L.warning(
				"{} envelope(s) not shown in Spotlight at {}: it did not take them within shutdown_timeout={:g}s "
				"(delivery to Sentry is not affected).".format(pending, self.Url, timeout),
				extra={NO_EVENT: True},
			)

	def kill(self) -> None:
		if self.Upstream is not None:
			self.Upstream.kill()
		try:
			self._queue.put_nowait(None)
		except queue.Full:
			pass

	def record_lost_event(self, *args: typing.Any, **kwargs: typing.Any) -> None:
		if self.Upstream is not None:
			self.Upstream.record_lost_event(*args, **kwargs)

	def is_healthy(self) -> bool:
		return self.Upstream.is_healthy() if self.Upstream is not None else True
