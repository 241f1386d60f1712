"""
The collector's HTTP side: a Sentry-compatible ingest endpoint (with CORS for browser SDKs), Spotlight's
``/stream`` and a JSON API, as aiohttp handlers that the asab application (``asab-sentry collector``) mounts
into its web container and that `start_in_thread` serves on its own for tests and embedding.

Ingest: envelopes are parsed on the event loop, then normalized and stored by one writer thread
(`BatchWriter`) that commits the envelopes waiting at that moment together; each request is answered after
its envelope is committed. Every malformed request gets a 4xx with ``{"detail": reason}``.

Read API (``GET /api/0/...``, see `Collector.install`): answers only peers on the loopback interface unless
``CollectorSettings.remote_read`` is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import logging
import queue
import re
import socket
import sys
import threading
import time
import typing
import zlib
from urllib.parse import quote as urllib_quote

import aiohttp.web
import sentry_sdk

from .envelope import Envelope, EnvelopeError, parse_envelope, parse_store_body
from .live import LiveStream
from .store import Store
from .web import WebUI, guard

L = logging.getLogger(__name__)

try:
	import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - brotli is in the [collector] and [test] extras
	brotli = None

#: The DSN's public key unless configured: word characters only, as every official SDK accepts
#: (the JavaScript SDK's DSN pattern takes ``\w+`` keys).
DEFAULT_KEY = "asabsentry"
#: The default key of earlier versions, still accepted while the key is the default.
LEGACY_KEY = "asab-sentry"


@dataclasses.dataclass
class CollectorSettings:
	"""
	Args:
		project_id: the project id in the DSN (``/api/<project_id>/...``).
		key: the DSN's public key; requests must present it. While it is the default (`DEFAULT_KEY`), the
			earlier default ``asab-sentry`` is accepted too.
		max_envelope_size: largest accepted request body as sent (bytes); larger → 413.
		max_decompressed_size: largest body after decompression (bytes); larger → 413.
		rate_limit: accept at most this many envelopes per ``rate_window`` seconds (0: no limit); over it → 429.
		rate_window: the rate limit's window in seconds (also the Retry-After).
		idle_timeout: seconds a connection may stay open without a request in progress (also one that has not
			finished sending its request headers); then it is closed.
		body_timeout: seconds a request may take to send its body; then 408.
		remote_read: serve the read API (``/api/0/...``, the web UI) to peers other than loopback too.
	"""

	project_id: str = "1"
	key: str = DEFAULT_KEY
	max_envelope_size: int = 20 * 1024 * 1024
	max_decompressed_size: int = 100 * 1024 * 1024
	rate_limit: int = 0
	rate_window: float = 60.0
	idle_timeout: float = 15.0
	body_timeout: float = 30.0
	remote_read: bool = False

	def dsn(self, host: str, port: int) -> str:
		if host in ("0.0.0.0", "::", ""):
			host = "127.0.0.1"
		if ":" in host:
			host = "[{}]".format(host)
		return "http://{}@{}:{}/{}".format(self.key, host, port, self.project_id)

	def accepts_key(self, key: str) -> bool:
		return key == self.key or (self.key == DEFAULT_KEY and key == LEGACY_KEY)


@aiohttp.web.middleware
async def _untraced(request: aiohttp.web.Request, handler: typing.Any) -> aiohttp.web.StreamResponse:
	"""
	Drop the transaction sentry-sdk's aiohttp integration opened for this request, if any: the collector must
	never trace itself. (sentry-sdk's own requests to a DSN with a port carry trace headers that force the
	sampling decision, so a sampler cannot do this.)
	"""
	span = sentry_sdk.get_current_span()
	transaction = getattr(span, "containing_transaction", None)
	if transaction is not None:
		transaction.sampled = False
	return await handler(request)


class _HTTPError(Exception):
	def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
		super().__init__(detail)
		self.Status = status
		self.Detail = detail
		self.Headers = headers or {}


_AUTH_KEY = re.compile(r"sentry_key\s*=\s*([^,\s]+)")


_CORS_HEADERS = {
	"Access-Control-Allow-Origin": "*",
	"Access-Control-Allow-Methods": "POST, OPTIONS",
	"Access-Control-Allow-Headers": "Content-Type, Content-Encoding, X-Sentry-Auth, Authorization, sentry-trace, baggage",
	"Access-Control-Expose-Headers": "X-Sentry-Rate-Limits, Retry-After, X-Sentry-Error",
	"Access-Control-Max-Age": "3600",
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str, name: str, now: float | None = None) -> float:
	"""
	A point in time from a query parameter: Unix seconds (``1718000000.5``), a duration back from now
	(``15m``, ``2h``, ``7d``, ``500ms``) or an ISO 8601 date (``2024-06-10T12:00:00Z``; without a zone: UTC).

	Raises:
		ValueError: naming ``name`` and the forms allowed.
	"""
	text = value.strip()
	try:
		number = float(text)
		if number == number and abs(number) < 1e12:
			return number
	except ValueError:
		pass
	match = _DURATION.match(text)
	if match:
		return (time.time() if now is None else now) - float(match.group(1)) * _UNITS[match.group(2)]
	try:
		moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
	except ValueError:
		raise ValueError(
			"{}={!r}: expected Unix seconds, a duration back from now (15m, 2h, 7d) or an ISO 8601 date".format(
				name, value[:50]
			)
		)
	if moment.tzinfo is None:
		moment = moment.replace(tzinfo=datetime.timezone.utc)
	return moment.timestamp()


def _int(value: str, name: str, minimum: int = 0, maximum: int = 2**63 - 1) -> int:
	try:
		number = int(value)
	except ValueError:
		raise ValueError("{}={!r}: expected a whole number".format(name, value[:50]))
	if not minimum <= number <= maximum:
		raise ValueError("{}={}: expected {} to {}".format(name, value[:50], minimum, maximum))
	return number


def _pair(value: str, name: str) -> tuple[str, str]:
	key, _, found = value.partition(":")
	if not key or not found:
		raise ValueError("{} must be key:value".format(name))
	return key, found


def item_filters(query: typing.Mapping[str, str]) -> dict[str, typing.Any]:
	"""
	The filters of `Store.list` / `Store.issues` from query parameters: ``type``, ``level``, ``release``,
	``environment``, ``tag=key:value``, ``q`` (text), ``since``/``until`` (see `parse_time`).

	Raises:
		ValueError: a parameter is malformed (the message names it).
	"""
	filters: dict[str, typing.Any] = {}
	for name in ("type", "level", "release", "environment"):
		if name in query:
			filters[name] = query[name]
	if "tag" in query:
		filters["tag"] = _pair(query["tag"], "tag")
	if query.get("q"):
		filters["text"] = query["q"]
	for name in ("since", "until"):
		if name in query:
			filters[name] = parse_time(query[name], name)
	return filters


def _page(query: typing.Mapping[str, str], default_limit: int = 50) -> dict[str, int]:
	return {
		"limit": _int(query.get("limit", str(default_limit)), "limit", 0, 1000),
		"offset": _int(query.get("offset", "0"), "offset", 0, 10**9),
	}


def _is_loopback(request: aiohttp.web.Request) -> bool:
	peer = request.transport.get_extra_info("peername") if request.transport is not None else None
	if not peer:
		return True  # a Unix socket or an in-process test client
	try:
		address = ipaddress.ip_address(str(peer[0]).split("%")[0])
	except ValueError:
		return False
	if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
		address = address.ipv4_mapped
	return address.is_loopback


class BatchWriter:
	"""
	Stores envelopes from one thread, committing all envelopes that are waiting in one transaction (group
	commit): many concurrent clients cost one commit per batch, not one per envelope, and SQLite and Relay's
	normalizer never run on the event loop.
	"""

	MaxBatch = 500

	def __init__(self, store: Store):
		self.Store = store
		self._queue: queue.SimpleQueue = queue.SimpleQueue()
		self._thread = threading.Thread(target=self._run, name="asab-sentry-collector-writer", daemon=True)
		self._thread.start()

	def submit(self, envelope: Envelope, project: str | None) -> asyncio.Future:
		"""
		Store ``envelope`` (call on the event loop); the future gives its row ids, or raises `EnvelopeError`
		for content that cannot be stored.
		"""
		loop = asyncio.get_running_loop()
		future = loop.create_future()
		self._queue.put((envelope, project, time.time(), future, loop))
		return future

	def stop(self) -> None:
		"""Store what was submitted, then end the thread."""
		self._queue.put(None)
		self._thread.join(timeout=30)

	def _run(self) -> None:
		stopping = False
		while not stopping:
			batch = [self._queue.get()]
			while len(batch) < self.MaxBatch:
				try:
					batch.append(self._queue.get_nowait())
				except queue.Empty:
					break
			if None in batch:
				stopping = True
				batch = [b for b in batch if b is not None]
			if batch:
				self._write(batch)

	def _write(self, batch: list) -> None:
		# Each envelope goes through `Store.add` (normalization, grouping, rows) inside one transaction: one
		# commit per batch, and every request is answered only after that commit.
		outcomes = []
		try:
			with self.Store.batch():
				for envelope, project, received, future, loop in batch:
					try:
						ids = self.Store.add(envelope, project, received)
					except Exception as e:  # EnvelopeError: content that cannot be stored (400)
						if not isinstance(e, EnvelopeError):
							L.exception("Cannot store an envelope")
						outcomes.append((future, loop, e, None))
					else:
						outcomes.append((future, loop, None, ids))
		except Exception as e:
			L.exception("Cannot store {} envelopes".format(len(batch)))
			refused = {id(future): error for future, _, error, ids in outcomes if ids is None}
			outcomes = [(future, loop, refused.get(id(future), e), None) for *_, future, loop in batch]
		# One wake-up of each event loop per batch, not one per envelope.
		by_loop: dict[typing.Any, list] = {}
		for future, loop, error, ids in outcomes:
			by_loop.setdefault(loop, []).append((future, error, ids))
		for loop, answers in by_loop.items():
			try:
				loop.call_soon_threadsafe(_resolve, answers)
			except RuntimeError:  # the loop is closed: nobody waits any more
				pass


def _resolve(answers: list) -> None:
	for future, error, ids in answers:
		if future.done():  # the request was cancelled (client gone)
			continue
		if error is not None:
			future.set_exception(error)
		else:
			future.set_result(ids)


class ConnectionWatchdog:
	"""
	Closes connections that have had no request in progress for ``idle_timeout`` seconds — idle keep-alive
	connections and ones stalled before their request headers were complete — whatever the aiohttp version
	does on its own. Call `sweep` about once a second with the aiohttp server.
	"""

	def __init__(self, idle_timeout: float):
		self.IdleTimeout = idle_timeout
		self._state: dict[typing.Any, list] = {}  # transport -> [last activity, requests in progress]
		self.Closed = 0

	@aiohttp.web.middleware
	async def middleware(self, request: aiohttp.web.Request, handler: typing.Any) -> aiohttp.web.StreamResponse:
		state = self._state.setdefault(request.transport, [time.monotonic(), 0])
		state[1] += 1
		try:
			return await handler(request)
		finally:
			state[1] -= 1
			state[0] = time.monotonic()

	def sweep(self, server: typing.Any) -> None:
		if server is None or self.IdleTimeout <= 0:
			return
		now = time.monotonic()
		alive = set()
		for connection in list(server.connections):
			transport = connection.transport
			if transport is None:
				continue
			alive.add(transport)
			state = self._state.setdefault(transport, [now, 0])
			if state[1] == 0 and now - state[0] > self.IdleTimeout:
				transport.close()
				self.Closed += 1
		for transport in [t for t in self._state if t not in alive]:
			del self._state[transport]


class Collector:
	"""
	Request handlers over a `Store`. ``Listeners`` are called with every accepted envelope (as parsed, the
	payloads as sent), on the event loop.
	"""

	def __init__(self, store: Store, settings: CollectorSettings):
		self.Store = store
		self.Settings = settings
		self.Listeners: list[typing.Callable[[typing.Any], None]] = []
		self.Watchdog = ConnectionWatchdog(settings.idle_timeout)
		self._writer: BatchWriter | None = None
		self._window_start = time.monotonic()
		self._window_count = 0
		self.Accepted = 0
		self.Rejected = 0
		# Live updates and Spotlight clients (GET /stream): every accepted envelope.
		self.Live = LiveStream()
		self.Listeners.append(self.Live.publish)

	def install(self, app: aiohttp.web.Application) -> None:
		"""
		Add the collector's routes to ``app``, untraced (a SentryService in the same process would otherwise
		send a transaction per received envelope, each one received again).

		Ingest (authenticated by the DSN's key; CORS allowed): ``POST /api/<project>/envelope/``,
		``POST /api/<project>/store/``; ``POST /stream`` (Spotlight's sidecar, no key).
		Read API (loopback only by default): ``GET /api/0/items``, ``/api/0/items/<id>``,
		``/api/0/items/<id>/attachment`` (the exact bytes), ``/api/0/issues``, ``/api/0/issues/<id>``,
		``/api/0/logs``, ``/api/0/traces``, ``/api/0/traces/<trace_id>``, ``/api/0/check-ins``,
		``/api/0/summary``; ``DELETE /api/0/items`` (clear everything); ``GET /health``.
		"""
		app.middlewares.append(self.Watchdog.middleware)
		app.middlewares.append(_untraced)
		app.middlewares.append(self._read_access)
		app.on_shutdown.append(self._on_shutdown)
		router = app.router
		router.add_post("/api/{project_id}/envelope/", self.envelope)
		router.add_post("/api/{project_id}/store/", self.store)
		router.add_route("OPTIONS", "/api/{project_id}/envelope/", self.preflight)
		router.add_route("OPTIONS", "/api/{project_id}/store/", self.preflight)
		router.add_post("/stream", self.stream)
		router.add_get("/api/0/items", self.list_items)
		router.add_delete("/api/0/items", self.clear)
		router.add_get("/api/0/items/{item_id}", self.get_item)
		router.add_get("/api/0/items/{item_id}/attachment", self.download)
		router.add_get("/api/0/issues", self.list_issues)
		router.add_get("/api/0/issues/{issue_id}", self.get_issue)
		router.add_get("/api/0/logs", self.list_logs)
		router.add_get("/api/0/traces", self.list_traces)
		router.add_get("/api/0/traces/{trace_id}", self.get_trace)
		router.add_get("/api/0/check-ins", self.list_check_ins)
		router.add_get("/api/0/summary", self.summary)
		router.add_get("/health", self.health)
		self._install_ui(app)

	def _install_ui(self, app: aiohttp.web.Application) -> None:
		"""``GET /stream`` (live, Spotlight's protocol) and the web UI (see `web`), behind its Host/Origin guard."""
		app.router.add_get("/stream", self.Live.handle)
		app.on_shutdown.append(self.Live.close)
		app.middlewares.append(guard(self.Settings.remote_read))
		try:
			WebUI(self.Store, self.Live).install(app)
		except RuntimeError as e:  # jinja2 missing: the API and ingest still work
			L.warning("The web UI is off: {}".format(e))
			message = "The collector's web UI is off: {}.\n".format(e)

			async def no_ui(request: aiohttp.web.Request) -> aiohttp.web.Response:
				return aiohttp.web.Response(text=message, status=503)

			app.router.add_get("/", no_ui)

	def build_app(self) -> aiohttp.web.Application:
		"""A stand-alone aiohttp application; serve it with ``auto_decompress=False`` (see `start_in_thread`)."""
		# The body is read and limited by the handlers themselves.
		app = aiohttp.web.Application(client_max_size=self.Settings.max_envelope_size + 1)
		self.install(app)
		return app

	async def _on_shutdown(self, app: aiohttp.web.Application) -> None:
		writer, self._writer = self._writer, None
		if writer is not None:
			await asyncio.get_running_loop().run_in_executor(None, writer.stop)

	@aiohttp.web.middleware
	async def _read_access(self, request: aiohttp.web.Request, handler: typing.Any) -> aiohttp.web.StreamResponse:
		"""Everything but ingest and /health answers loopback peers only, unless ``remote_read``."""
		path = request.path
		if path in ("/health", "/stream") or (path.startswith("/api/") and not path.startswith("/api/0/")):
			return await handler(request)
		if self.Settings.remote_read or _is_loopback(request):
			return await handler(request)
		return aiohttp.web.json_response(
			{"detail": "the read API answers loopback clients only ([collector] remote_read=yes allows others)"},
			status=403,
		)

	# Ingest

	async def preflight(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""CORS preflight of a browser SDK."""
		return aiohttp.web.Response(status=204, headers=_CORS_HEADERS)

	async def envelope(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		return await self._ingest(request, parse_envelope, authenticate=True)

	async def store(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		return await self._ingest(request, parse_store_body, authenticate=True)

	async def stream(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""Spotlight's sidecar endpoint: envelopes, no authentication."""
		return await self._ingest(request, parse_envelope, authenticate=False)

	async def _ingest(self, request: aiohttp.web.Request, parse, authenticate: bool) -> aiohttp.web.Response:
		try:
			project = None
			if authenticate:
				project = request.match_info["project_id"]
				self._authenticate(request, project)
			self._rate_limit()
			try:
				if sys.version_info >= (3, 11):  # no task per request
					async with asyncio.timeout(self.Settings.body_timeout):
						body = await self._read_body(request)
				else:
					body = await asyncio.wait_for(self._read_body(request), self.Settings.body_timeout)
			except asyncio.TimeoutError:
				raise _HTTPError(408, "the body did not arrive within {:g}s".format(self.Settings.body_timeout))
			try:
				envelope = parse(body)
				ids = await self._write(envelope, project)
			except EnvelopeError as e:
				raise _HTTPError(400, "invalid envelope: {}".format(e))
		except _HTTPError as e:
			self.Rejected += 1
			headers = dict(_CORS_HEADERS, **e.Headers) if authenticate else e.Headers
			return aiohttp.web.json_response({"detail": e.Detail}, status=e.Status, headers=headers)
		self.Accepted += 1
		for listener in self.Listeners:
			try:
				listener(envelope)
			except Exception:
				L.exception("Collector listener failed")
		event_id = envelope.headers.get("event_id")
		if event_id is None:
			for item in envelope.items:
				if isinstance(item.json, dict) and item.json.get("event_id"):
					event_id = item.json["event_id"]
					break
		if not isinstance(event_id, str):
			event_id = None
		return aiohttp.web.json_response(
			{"id": event_id, "items": ids}, headers=_CORS_HEADERS if authenticate else None
		)

	async def _write(self, envelope: Envelope, project: str | None) -> list[int]:
		if self._writer is None:
			self._writer = BatchWriter(self.Store)
		try:
			return await self._writer.submit(envelope, project)
		except EnvelopeError:
			raise
		except Exception as e:
			raise _HTTPError(503, "the collector could not store the envelope: {}".format(type(e).__name__))

	def _authenticate(self, request: aiohttp.web.Request, project: str) -> None:
		key = request.query.get("sentry_key")
		if key is None:
			match = _AUTH_KEY.search(request.headers.get("X-Sentry-Auth", ""))
			if match is None:
				match = _AUTH_KEY.search(request.headers.get("Authorization", ""))
			key = match.group(1) if match else None
		if key is None:
			raise _HTTPError(401, "missing authorization: send X-Sentry-Auth or ?sentry_key=")
		if not self.Settings.accepts_key(key):
			raise _HTTPError(403, "invalid sentry_key")
		if project != self.Settings.project_id:
			raise _HTTPError(403, "unknown project {!r}".format(project[:50]))

	def _rate_limit(self) -> None:
		limit = self.Settings.rate_limit
		if limit <= 0:
			return
		now = time.monotonic()
		if now - self._window_start >= self.Settings.rate_window:
			self._window_start = now
			self._window_count = 0
		if self._window_count >= limit:
			retry_after = max(1, int(self.Settings.rate_window - (now - self._window_start) + 0.999))
			raise _HTTPError(
				429,
				"rate limit of {} envelope{} per {:g}s reached".format(
					limit, "" if limit == 1 else "s", self.Settings.rate_window
				),
				{"Retry-After": str(retry_after), "X-Sentry-Rate-Limits": "{}::organization".format(retry_after)},
			)
		self._window_count += 1

	async def _read_body(self, request: aiohttp.web.Request) -> bytes:
		limit = self.Settings.max_envelope_size
		if request.content_length is not None and request.content_length > limit:
			raise _HTTPError(413, "body of {} bytes is over the limit of {}".format(request.content_length, limit))
		chunks, size = [], 0
		while True:
			try:
				chunk = await request.content.read(65536)
			except aiohttp.ClientPayloadError as e:
				raise _HTTPError(400, "incomplete body: {}".format(e))
			if not chunk:
				break
			size += len(chunk)
			if size > limit:
				raise _HTTPError(413, "body is over the limit of {} bytes".format(limit))
			chunks.append(chunk)
		body = b"".join(chunks)
		encoding = request.headers.get("Content-Encoding", "").strip().lower()
		if encoding in ("", "identity"):
			return body
		return self._decompress(body, encoding)

	def _decompress(self, body: bytes, encoding: str) -> bytes:
		limit = self.Settings.max_decompressed_size
		if encoding == "br":
			if brotli is None:
				raise _HTTPError(415, "brotli bodies need the 'brotli' package (pip install asab-sentry[collector])")
			decompressor = brotli.Decompressor()
			out, size = [], 0
			try:
				for start in range(0, len(body), 16384):
					piece = decompressor.process(body[start : start + 16384])
					size += len(piece)
					if size > limit:
						raise _HTTPError(413, "decompressed body is over the limit of {} bytes".format(limit))
					out.append(piece)
				if not decompressor.is_finished():
					raise _HTTPError(400, "truncated brotli body")
			except brotli.error as e:
				raise _HTTPError(400, "invalid brotli body: {}".format(e))
			return b"".join(out)
		if encoding == "gzip":
			wbits = 16 + zlib.MAX_WBITS
		elif encoding == "deflate":
			wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
		else:
			raise _HTTPError(415, "unsupported Content-Encoding {!r} (gzip, deflate, br)".format(encoding[:50]))
		decompressor = zlib.decompressobj(wbits)
		try:
			out = decompressor.decompress(body, limit + 1)
			if len(out) > limit or decompressor.unconsumed_tail:
				raise _HTTPError(413, "decompressed body is over the limit of {} bytes".format(limit))
			if not decompressor.eof:
				raise _HTTPError(400, "truncated {} body".format(encoding))
		except zlib.error as e:
			raise _HTTPError(400, "invalid {} body: {}".format(encoding, e))
		return out

	# JSON API

	@staticmethod
	def _bad(detail: str) -> aiohttp.web.Response:
		return aiohttp.web.json_response({"detail": detail}, status=400)

	@staticmethod
	def _not_found(detail: str) -> aiohttp.web.Response:
		return aiohttp.web.json_response({"detail": detail}, status=404)

	async def _run(self, function: typing.Callable[..., typing.Any], *args: typing.Any, **kwargs: typing.Any):
		"""A store read, off the event loop."""
		return await asyncio.get_running_loop().run_in_executor(None, lambda: function(*args, **kwargs))

	async def list_items(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""``GET /api/0/items``: `Store.list` (filters: see `item_filters`; ``issue``, ``trace_id``, ``event_id``,
		``after``, ``limit`` ≤ 1000, ``offset``, ``order=asc|desc``)."""
		q = request.query
		try:
			filters = item_filters(q)
			for name in ("event_id", "trace_id"):
				if name in q:
					filters[name] = q[name]
			for name in ("issue", "issue_id"):  # issue_id: what the viewer's Source sends
				if name in q:
					filters["issue_id"] = _int(q[name], name)
			if "after" in q:
				filters["after_id"] = _int(q["after"], "after")
			if q.get("order", "desc") not in ("asc", "desc"):
				raise ValueError("order must be asc or desc")
			items = await self._run(self.Store.list, **filters, **_page(q), newest_first=q.get("order") != "asc")
		except ValueError as e:
			return self._bad(str(e))
		return aiohttp.web.json_response({"items": items, "count": len(items)})

	async def get_item(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""``GET /api/0/items/<id>``: `Store.get` (``?sent=1``: the payload as the client sent it)."""
		try:
			item_id = _int(request.match_info["item_id"], "item id")
		except ValueError as e:
			return self._bad(str(e))
		item = await self._run(self.Store.get, item_id, sent=request.query.get("sent") in ("1", "true", "yes"))
		if item is None:
			return self._not_found("no item {}".format(item_id))
		return aiohttp.web.json_response(item)

	async def download(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""``GET /api/0/items/<id>/attachment``: the item's exact bytes, as a download named by its filename."""
		try:
			item_id = _int(request.match_info["item_id"], "item id")
		except ValueError as e:
			return self._bad(str(e))
		found = await self._run(self.Store.attachment, item_id)
		if found is None:
			return self._not_found("no item {}".format(item_id))
		filename = found["filename"] or "item-{}.bin".format(item_id)
		quoted = re.sub(r"[^A-Za-z0-9._ -]", "_", filename)
		return aiohttp.web.Response(
			body=found["data"],
			headers={
				"Content-Type": found["content_type"],
				"Content-Disposition": "attachment; filename=\"{}\"; filename*=UTF-8''{}".format(
					quoted, urllib_quote(filename)
				),
				"X-Content-Type-Options": "nosniff",
			},
		)

	async def clear(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""``DELETE /api/0/items``: delete everything stored."""
		await self._run(self.Store.clear)
		return aiohttp.web.json_response({"cleared": True})

	async def list_issues(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""``GET /api/0/issues``: `Store.issues` (the filters of items, ``sort``, ``limit``, ``offset``)."""
		q = request.query
		try:
			filters = item_filters(q)
			filters.pop("type", None)
			issues = await self._run(self.Store.issues, **filters, **_page(q), sort=q.get("sort", "last_seen"))
		except ValueError as e:
			return self._bad(str(e))
		return aiohttp.web.json_response({"issues": issues, "count": len(issues)})

	async def get_issue(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""``GET /api/0/issues/<id>``: `Store.issue` plus its latest ``events`` (summaries, newest first)."""
		try:
			issue_id = _int(request.match_info["issue_id"], "issue id")
			page = _page(request.query)
		except ValueError as e:
			return self._bad(str(e))
		issue = await self._run(self.Store.issue, issue_id)
		if issue is None:
			return self._not_found("no issue {}".format(issue_id))
		issue["events"] = await self._run(self.Store.list, type="event", issue_id=issue_id, **page)
		return aiohttp.web.json_response(issue)

	async def list_logs(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""``GET /api/0/logs``: `Store.logs` (``level``, ``q``, ``attribute=key:value``, ``trace_id``,
		``release``, ``environment``, ``since``, ``until``, ``after``, ``limit``, ``offset``, ``order``)."""
		q = request.query
		try:
			filters: dict[str, typing.Any] = {}
			for name in ("level", "trace_id", "release", "environment"):
				if name in q:
					filters[name] = q[name]
			if q.get("q"):
				filters["text"] = q["q"]
			if "attribute" in q:
				filters["attribute"] = _pair(q["attribute"], "attribute")
			for name in ("since", "until"):
				if name in q:
					filters[name] = parse_time(q[name], name)
			if "after" in q:
				filters["after_id"] = _int(q["after"], "after")
			records = await self._run(
				self.Store.logs, **filters, **_page(q, 100), newest_first=q.get("order", "desc") != "asc"
			)
		except ValueError as e:
			return self._bad(str(e))
		return aiohttp.web.json_response({"logs": records, "count": len(records)})

	async def list_traces(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""``GET /api/0/traces``: `Store.traces`."""
		try:
			page = _page(request.query)
		except ValueError as e:
			return self._bad(str(e))
		traces = await self._run(self.Store.traces, **page)
		return aiohttp.web.json_response({"traces": traces, "count": len(traces)})

	async def get_trace(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""``GET /api/0/traces/<trace_id>``: `Store.trace`."""
		trace_id = request.match_info["trace_id"]
		trace = await self._run(self.Store.trace, trace_id)
		if trace is None:
			return self._not_found("no trace {}".format(trace_id[:64]))
		return aiohttp.web.json_response(trace)

	async def list_check_ins(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""``GET /api/0/check-ins``: `Store.check_ins` (``monitor``, ``status``, ``limit``, ``offset``)."""
		q = request.query
		try:
			page = _page(q, 100)
		except ValueError as e:
			return self._bad(str(e))
		rows = await self._run(self.Store.check_ins, monitor_slug=q.get("monitor"), status=q.get("status"), **page)
		return aiohttp.web.json_response({"check_ins": rows, "count": len(rows)})

	async def summary(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		"""``GET /api/0/summary``: `Store.summary` (sessions, client reports, item counts)."""
		return aiohttp.web.json_response(await self._run(self.Store.summary))

	async def health(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		return aiohttp.web.json_response({"status": "ok", "items": await self._run(self.Store.count)})


class RunningCollector:
	"""A collector served from a background thread (see `start_in_thread`)."""

	def __init__(self, collector: Collector, host: str, port: int, thread: threading.Thread, loop, runner):
		self.Collector = collector
		self.Host = host
		self.Port = port
		self._thread = thread
		self._loop = loop
		self._runner = runner

	@property
	def url(self) -> str:
		return "http://{}:{}".format(self.Host, self.Port)

	@property
	def dsn(self) -> str:
		return self.Collector.Settings.dsn(self.Host, self.Port)

	def stop(self) -> None:
		if not self._thread.is_alive():
			return
		future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
		try:
			future.result(timeout=10)
		finally:
			self._loop.call_soon_threadsafe(self._loop.stop)
			self._thread.join(timeout=10)

	def __enter__(self) -> RunningCollector:
		return self

	def __exit__(self, *exc: typing.Any) -> None:
		self.stop()


def start_in_thread(
	store: Store | None = None, settings: CollectorSettings | None = None, host: str = "127.0.0.1", port: int = 0
) -> RunningCollector:
	"""
	Serve a collector on ``host:port`` (0: a free port) from a daemon thread with its own event loop.

	Example:
		>>> with start_in_thread() as running:
		...     dsn = running.dsn
	"""
	collector = Collector(store or Store(":memory:"), settings or CollectorSettings())
	ready = threading.Event()
	state: dict[str, typing.Any] = {}

	def serve() -> None:
		loop = asyncio.new_event_loop()
		asyncio.set_event_loop(loop)
		try:
			runner = aiohttp.web.AppRunner(
				collector.build_app(),
				access_log=None,
				auto_decompress=False,
				keepalive_timeout=collector.Settings.idle_timeout,
			)
			loop.run_until_complete(runner.setup())
			sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
			sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
			sock.bind((host, port))
			site = aiohttp.web.SockSite(runner, sock)
			loop.run_until_complete(site.start())

			def sweep() -> None:
				collector.Watchdog.sweep(runner.server)
				loop.call_later(1.0, sweep)

			loop.call_soon(sweep)
			state.update(loop=loop, runner=runner, port=sock.getsockname()[1])
		except BaseException as e:
			state["error"] = e
			ready.set()
			return
		ready.set()
		try:
			loop.run_forever()
		finally:
			loop.close()

	thread = threading.Thread(target=serve, name="asab-sentry-collector", daemon=True)
	thread.start()
	ready.wait(timeout=30)
	if "error" in state:
		raise state["error"]
	return RunningCollector(collector, host, state["port"], thread, state["loop"], state["runner"])
