"""
The collector's HTTP side: a Sentry-compatible ingest endpoint, Spotlight's ``/stream`` and a JSON API,
as aiohttp handlers that the asab application (``asab-sentry collector``) mounts into its web container
and that `start_in_thread` serves on its own for tests and embedding.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import socket
import threading
import time
import typing
import zlib

import aiohttp.web
import sentry_sdk

from .envelope import EnvelopeError, parse_envelope, parse_store_body
from .live import LiveStream
from .store import Store
from .web import WebUI, guard

L = logging.getLogger(__name__)

try:
	import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - brotli is in the [collector] and [test] extras
	brotli = None


@dataclasses.dataclass
class CollectorSettings:
	"""
	Args:
		project_id: the project id in the DSN (``/api/<project_id>/...``).
		key: the DSN's public key; requests must present it.
		max_envelope_size: largest accepted request body as sent (bytes); larger → 413.
		max_decompressed_size: largest body after decompression (bytes); larger → 413.
		rate_limit: accept at most this many envelopes per ``rate_window`` seconds (0: no limit); over it → 429.
		rate_window: the rate limit's window in seconds (also the Retry-After).
	"""

	project_id: str = "1"
	key: str = "asab-sentry"
	max_envelope_size: int = 20 * 1024 * 1024
	max_decompressed_size: int = 100 * 1024 * 1024
	rate_limit: int = 0
	rate_window: float = 60.0

	def dsn(self, host: str, port: int) -> str:
		return "http://{}@{}:{}/{}".format(self.key, host, port, self.project_id)


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


class Collector:
	"""Request handlers over a `Store`. ``Listeners`` are called with every accepted envelope."""

	def __init__(self, store: Store, settings: CollectorSettings):
		self.Store = store
		self.Settings = settings
		self.Listeners: list[typing.Callable[[typing.Any], None]] = []
		self._window_start = time.monotonic()
		self._window_count = 0
		self.Accepted = 0
		self.Rejected = 0
		# Live updates and Spotlight clients (GET /stream): every accepted envelope.
		self.Live = LiveStream()
		self.Listeners.append(self.Live.publish)

	def install(self, app: aiohttp.web.Application) -> None:
		"""Add the collector's routes to ``app``, untraced (a SentryService in the same process would otherwise
		send a transaction per received envelope, each one received again)."""
		app.middlewares.append(_untraced)
		router = app.router
		router.add_post("/api/{project_id}/envelope/", self.envelope)
		router.add_post("/api/{project_id}/store/", self.store)
		router.add_post("/stream", self.stream)
		router.add_get("/api/0/items", self.list_items)
		router.add_get("/api/0/items/{item_id}", self.get_item)
		router.add_get("/health", self.health)
		self._install_ui(app)

	def _install_ui(self, app: aiohttp.web.Application, remote: bool = False) -> None:
		"""``GET /stream`` (live, Spotlight's protocol), the web UI, and the loopback guard of UI and read API."""
		app.router.add_get("/stream", self.Live.handle)
		app.on_shutdown.append(self.Live.close)
		app.middlewares.append(guard(remote))
		try:
			WebUI(self.Store, self.Live).install(app)
		except RuntimeError as e:  # jinja2 missing: the API and ingest still work
			L.warning("The web UI is off: {}".format(e))

	def build_app(self) -> aiohttp.web.Application:
		"""A stand-alone aiohttp application; serve it with ``auto_decompress=False`` (see `start_in_thread`)."""
		# The body is read and limited by the handlers themselves.
		app = aiohttp.web.Application(client_max_size=self.Settings.max_envelope_size + 1)
		self.install(app)
		return app

	# Ingest

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
			body = await self._read_body(request)
			try:
				envelope = parse(body)
			except EnvelopeError as e:
				raise _HTTPError(400, "invalid envelope: {}".format(e))
			ids = self.Store.add(envelope, project)
		except _HTTPError as e:
			self.Rejected += 1
			return aiohttp.web.json_response({"detail": e.Detail}, status=e.Status, headers=e.Headers)
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
		return aiohttp.web.json_response({"id": event_id, "items": ids})

	def _authenticate(self, request: aiohttp.web.Request, project: str) -> None:
		key = request.query.get("sentry_key")
		if key is None:
			match = _AUTH_KEY.search(request.headers.get("X-Sentry-Auth", ""))
			if match is None:
				match = _AUTH_KEY.search(request.headers.get("Authorization", ""))
			key = match.group(1) if match else None
		if key is None:
			raise _HTTPError(401, "missing authorization: send X-Sentry-Auth or ?sentry_key=")
		if key != self.Settings.key:
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
				"rate limit of {} envelopes per {:g}s reached".format(limit, self.Settings.rate_window),
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

	async def list_items(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		q = request.query
		try:
			tag = None
			if "tag" in q:
				key, _, value = q["tag"].partition(":")
				if not value:
					raise ValueError("tag must be key:value")
				tag = (key, value)
			items = self.Store.list(
				type=q.get("type"),
				level=q.get("level"),
				tag=tag,
				text=q.get("q"),
				since=float(q["since"]) if "since" in q else None,
				until=float(q["until"]) if "until" in q else None,
				release=q.get("release"),
				environment=q.get("environment"),
				event_id=q.get("event_id"),
				after_id=int(q["after"]) if "after" in q else None,
				limit=min(int(q.get("limit", 50)), 1000),
				offset=int(q.get("offset", 0)),
				newest_first=q.get("order", "desc") != "asc",
			)
		except ValueError as e:
			return aiohttp.web.json_response({"detail": str(e)}, status=400)
		return aiohttp.web.json_response({"items": items, "count": len(items)})

	async def get_item(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		try:
			item_id = int(request.match_info["item_id"])
		except ValueError:
			return aiohttp.web.json_response({"detail": "item id must be a number"}, status=400)
		item = self.Store.get(item_id)
		if item is None:
			return aiohttp.web.json_response({"detail": "no item {}".format(item_id)}, status=404)
		return aiohttp.web.json_response(item)

	async def health(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
		return aiohttp.web.json_response({"status": "ok", "items": self.Store.count()})


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
			runner = aiohttp.web.AppRunner(collector.build_app(), access_log=None, auto_decompress=False)
			loop.run_until_complete(runner.setup())
			sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
			sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
			sock.bind((host, port))
			site = aiohttp.web.SockSite(runner, sock)
			loop.run_until_complete(site.start())
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
