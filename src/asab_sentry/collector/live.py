"""
Live updates: ``GET /stream`` as server-sent events, speaking Spotlight's sidecar protocol.

Every envelope the collector accepts is sent to each connected client as one SSE event whose name is the
envelope's content type (``application/x-sentry-envelope``) and whose data is the envelope as text; with
``?base64`` the event is named ``application/x-sentry-envelope;base64`` and the data is base64 (binary
attachments survive). A client that connects gets the envelopes of the last 10 seconds first (at most 100),
like Spotlight's sidecar, so an overlay opened right after a crash still sees it. The collector's own web
pages listen to the same stream to refresh themselves.

Browsers may read the stream from pages served by loopback origins (``http://localhost:*``,
``http://127.0.0.1:*``, ``http://[::1]:*``): that is where the developer's application runs when a Spotlight
overlay is embedded in it; other origins get no CORS header.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import re
import time
import typing

import aiohttp.web

from .envelope import Envelope

L = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-sentry-envelope"
_LOOPBACK_ORIGIN = re.compile(
	r"^https?://(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\])(:\d{1,5})?$", re.IGNORECASE
)


def serialize(envelope: Envelope) -> bytes:
	"""The envelope in Sentry's wire format (every item with its ``length``)."""
	parts = [json.dumps(envelope.headers, ensure_ascii=False).encode("utf-8", "surrogatepass")]
	for item in envelope.items:
		headers = dict(item.headers, length=len(item.payload))
		parts.append(json.dumps(headers, ensure_ascii=False).encode("utf-8", "surrogatepass"))
		parts.append(item.payload)
	return b"\n".join(parts) + b"\n"


class _Entry:
	"""An accepted envelope, serialized only when a client needs it (and then once)."""

	__slots__ = ("At", "Envelope", "Size", "_data")

	def __init__(self, envelope: Envelope):
		self.At = time.monotonic()
		self.Envelope = envelope
		self.Size = sum(len(item.payload) for item in envelope.items)
		self._data: bytes | None = None

	@property
	def data(self) -> bytes:
		if self._data is None:
			self._data = serialize(self.Envelope)
		return self._data


class _Client:
	def __init__(self, base64_data: bool, queue_size: int):
		self.Base64 = base64_data
		self.Queue: asyncio.Queue[_Entry | None] = asyncio.Queue(maxsize=queue_size)
		self.Dropped = 0


class LiveStream:
	"""
	Fans accepted envelopes out to the connected ``GET /stream`` clients.

	Args:
		replay_seconds: envelopes this recent are sent to a client when it connects.
		replay_count: at most this many of them.
		replay_bytes: and at most this many payload bytes in all (large attachments are not kept for replay).
		queue_size: envelopes waiting for a slow client; beyond it they are dropped for that client
			(counted, said once in the log) and the client reads the rest from the API.
		keepalive: seconds between SSE comments that keep idle connections open through proxies.
	"""

	def __init__(
		self,
		replay_seconds: float = 10.0,
		replay_count: int = 100,
		replay_bytes: int = 16 * 1024 * 1024,
		queue_size: int = 1000,
		keepalive: float = 15.0,
	):
		self.ReplaySeconds = replay_seconds
		self.KeepAlive = keepalive
		self.QueueSize = queue_size
		self.Dropped = 0
		self.ReplayCount = replay_count
		self.ReplayBytes = replay_bytes
		self._recent: collections.deque[_Entry] = collections.deque()
		self._recent_bytes = 0
		self._clients: set[_Client] = set()

	@property
	def clients(self) -> int:
		return len(self._clients)

	def publish(self, envelope: Envelope) -> None:
		"""Called (on the collector's event loop) with every accepted envelope."""
		entry = _Entry(envelope)  # no client, no serialization: the collector's throughput is not paid for this
		self._recent.append(entry)
		self._recent_bytes += entry.Size
		while self._recent and (len(self._recent) > self.ReplayCount or self._recent_bytes > self.ReplayBytes):
			self._recent_bytes -= self._recent.popleft().Size
		for client in list(self._clients):
			self._offer(client, entry)

	def clear(self) -> None:
		"""Forget the envelopes kept for replay (the store was cleared)."""
		self._recent.clear()
		self._recent_bytes = 0

	async def close(self, app: typing.Any = None) -> None:
		"""End every open stream (an ``on_shutdown`` handler: the server would otherwise wait for them)."""
		for client in list(self._clients):
			while True:
				try:
					client.Queue.put_nowait(None)
					break
				except asyncio.QueueFull:
					client.Queue.get_nowait()

	def _offer(self, client: _Client, entry: _Entry) -> None:
		try:
			client.Queue.put_nowait(entry)
		except asyncio.QueueFull:
			client.Dropped += 1
			self.Dropped += 1
			if client.Dropped == 1:
				L.warning(
					"A /stream client is too slow: envelopes dropped for it (it can read them from the API)",
					struct_data={"queue_size": self.QueueSize},
				)

	async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
		"""``GET /stream``."""
		response = aiohttp.web.StreamResponse(
			headers={
				"Content-Type": "text/event-stream; charset=utf-8",
				"Cache-Control": "no-cache",
				"X-Accel-Buffering": "no",
			}
		)
		origin = request.headers.get("Origin", "")
		if _LOOPBACK_ORIGIN.match(origin):
			response.headers["Access-Control-Allow-Origin"] = origin
			response.headers["Vary"] = "Origin"
		await response.prepare(request)
		client = _Client("base64" in request.query, self.QueueSize)
		cutoff = time.monotonic() - self.ReplaySeconds
		for entry in list(self._recent):
			if entry.At >= cutoff:
				self._offer(client, entry)
		self._clients.add(client)
		try:
			await response.write(b": connected\n\n")
			while True:
				try:
					entry = await asyncio.wait_for(client.Queue.get(), timeout=self.KeepAlive)
				except asyncio.TimeoutError:
					await response.write(b": keep-alive\n\n")
					continue
				if entry is None:  # the collector is shutting down
					break
				await response.write(_event(entry.data, client.Base64))
		except ConnectionResetError:  # the client went away
			pass
		finally:
			self._clients.discard(client)
		return response


def _event(data: bytes, as_base64: bool) -> bytes:
	if as_base64:
		return b"event: " + CONTENT_TYPE.encode() + b";base64\ndata: " + base64.b64encode(data) + b"\n\n"
	text = data.decode("utf-8", "replace")
	lines = re.split(r"\r\n|\r|\n", text.rstrip("\n"))
	body = "".join("data: {}\n".format(line) for line in lines)
	return "event: {}\n{}\n".format(CONTENT_TYPE, body).encode("utf-8", "replace")
