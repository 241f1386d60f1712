"""
``asab-sentry collector``: the collector as an ASAB application (asab.Application + asab.web).

Configuration (all optional)::

	[collector]
	listen=127.0.0.1 8999        ; address and port; loopback only unless you change it
	storage=asab-sentry.sqlite   ; SQLite file
	project_id=1
	key=asabsentry               ; the DSN's public key (word characters: every SDK accepts it)
	max_envelope_size=20971520   ; bytes as sent; larger bodies get 413
	max_decompressed_size=104857600
	rate_limit=0                 ; envelopes per rate_window (0: unlimited); over it: 429 + Retry-After
	rate_window=60s
	retention_age=7d             ; 0: keep forever
	retention_count=100000       ; 0: no limit
	idle_timeout=15s             ; connections without a request in progress are closed after this
	body_timeout=30s             ; a request body must arrive within this; else 408
	remote_read=no               ; yes: the read API and web UI answer other hosts than loopback too

``listen`` given as a port alone (``listen=8999``) binds 127.0.0.1.
"""

from __future__ import annotations

import logging
import socket
import typing

import aiohttp.http_exceptions
import aiohttp.web
import asab
import asab.web

from ..errors import SentryConfigError
from ..settings import parse_duration, strip_inline_comment
from .server import DEFAULT_KEY, Collector, CollectorSettings
from .store import Store

L = logging.getLogger(__name__)

SECTION = "collector"

DEFAULTS = {
	"listen": "127.0.0.1 8999",
	"storage": "asab-sentry.sqlite",
	"project_id": "1",
	"key": DEFAULT_KEY,
	"max_envelope_size": str(20 * 1024 * 1024),
	"max_decompressed_size": str(100 * 1024 * 1024),
	"rate_limit": "0",
	"rate_window": "60s",
	"retention_age": "7d",
	"retention_count": "100000",
	"idle_timeout": "15s",
	"body_timeout": "30s",
	"remote_read": "no",
}


def _option(name: str) -> str:
	return strip_inline_comment(asab.Config.get(SECTION, name, fallback=DEFAULTS[name]))


def _int_option(name: str, minimum: int = 0) -> int:
	value = _option(name)
	try:
		number = int(value)
	except ValueError:
		number = minimum - 1
	if number < minimum:
		raise SentryConfigError(SECTION, name, value, "expected a whole number of at least {}".format(minimum))
	return number


def _bool_option(name: str) -> bool:
	value = _option(name).strip().lower()
	if value in ("yes", "true", "on", "1"):
		return True
	if value in ("no", "false", "off", "0", ""):
		return False
	raise SentryConfigError(SECTION, name, value, "expected yes or no")


def _listen(value: str) -> str:
	"""``listen`` as asab.web takes it; a port alone binds loopback (asab.web would bind every interface)."""
	parts = value.split()
	if len(parts) == 1 and parts[0].isdigit():
		return "127.0.0.1 {}".format(parts[0])
	return value


class ListenError(Exception):
	"""The collector cannot listen on its address (in use, not local, not permitted); the message names it."""


def _check_listen(listen: str) -> None:
	"""
	Fails fast, before anything starts, when the address cannot be bound: the same bind aiohttp will do
	(SO_REUSEADDR, every address the host resolves to). Port 0 (any free port) always binds.
	"""
	parts = listen.split()
	host, port = (parts[0], parts[-1]) if len(parts) > 1 else ("0.0.0.0", parts[0] if parts else "")
	try:
		number = int(port)
	except ValueError:
		number = -1
	if not 0 <= number <= 65535:  # bind() of a port over 65535 raised OverflowError in a task: "ready", not listening
		raise SentryConfigError(
			SECTION, "listen", listen, "expected 'ADDRESS PORT' with a port from 0 to 65535, e.g. '127.0.0.1 8999'"
		)
	if number == 0:
		return
	where = "{}:{}".format(host, number)
	try:
		infos = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
	except OSError as e:
		raise ListenError("Cannot listen on {}: {}".format(where, e.strerror or e))
	for family, kind, proto, _, address in infos:
		with socket.socket(family, kind, proto) as probe:
			probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
			try:
				probe.bind(address)
			except OSError as e:
				raise ListenError("Cannot listen on {}: {}".format(where, e.strerror or e))


def _warn_unknown_options() -> None:
	if not asab.Config.has_section(SECTION):
		return
	for name in asab.Config.options(SECTION):
		if name not in DEFAULTS and name not in asab.Config.defaults():
			L.warning("Unknown option [{}] {} is ignored.".format(SECTION, name))


def _apply_overrides(overrides: dict[str, typing.Any]) -> None:
	values = {k: str(v) for k, v in overrides.items() if v is not None and k not in ("host", "port")}
	if overrides.get("host") is not None or overrides.get("port") is not None:
		current = _option("listen").split()
		host = overrides.get("host") or (current[0] if len(current) > 1 else "127.0.0.1")
		port = overrides.get("port") if overrides.get("port") is not None else current[-1]
		values["listen"] = "{} {}".format(host, port)
	if values:
		asab.Config.read_dict({SECTION: values})


class _MalformedRequests(logging.Filter):
	"""
	aiohttp logs each request it cannot parse (a negative Content-Length, a bad chunk, a header line too long)
	with a traceback; the client already got its 400, so the console gets one line without it.
	"""

	def filter(self, record: logging.LogRecord) -> bool:
		error = record.exc_info[1] if record.exc_info else None
		if isinstance(error, aiohttp.http_exceptions.HttpProcessingError):
			record.msg = "Malformed request from %s: %s"
			record.args = (record.args[0] if isinstance(record.args, tuple) and record.args else "?", error.message)
			record.exc_info = None
			record.exc_text = None
			record.levelno, record.levelname = logging.WARNING, "WARNING"
		return True


class CollectorApplication(asab.Application):
	"""
	A Sentry-compatible ingest endpoint with SQLite storage and a JSON API, for development and tests.

	Attributes:
		Store: the `Store`.
		Collector: the request handlers (`Collector`).
		WebContainer: the asab.web container serving them.
	"""

	def __init__(self, args: list[str] | None = None, overrides: dict[str, typing.Any] | None = None):
		"""
		Args:
			args: asab's command line (e.g. ``["-c", "collector.conf"]``); ``[]`` by default.
			overrides: ``[collector]`` options that win over the configuration file (the command's flags);
				``host`` and ``port`` replace the respective part of ``listen``.

		Raises:
			SentryConfigError: an invalid ``[collector]`` option.
			ListenError: the listen address cannot be bound (e.g. the port is in use).
		"""
		super().__init__(args=args if args is not None else [], modules=[asab.web.Module])
		_apply_overrides(overrides or {})
		_warn_unknown_options()
		listen = _listen(_option("listen"))
		_check_listen(listen)
		settings = CollectorSettings(
			project_id=_option("project_id"),
			key=_option("key"),
			max_envelope_size=_int_option("max_envelope_size", 1),
			max_decompressed_size=_int_option("max_decompressed_size", 1),
			rate_limit=_int_option("rate_limit"),
			rate_window=parse_duration(SECTION, "rate_window", _option("rate_window")),
			idle_timeout=parse_duration(SECTION, "idle_timeout", _option("idle_timeout")),
			body_timeout=parse_duration(SECTION, "body_timeout", _option("body_timeout")),
			remote_read=_bool_option("remote_read"),
		)
		self.Store = Store(
			_option("storage"),
			max_age=parse_duration(SECTION, "retention_age", _option("retention_age")),
			max_count=_int_option("retention_count"),
		)
		self.Collector = Collector(self.Store, settings)

		websvc = self.get_service("asab.WebService")
		self.WebContainer = asab.web.WebContainer(websvc, "collector:web", config={"listen": listen})
		self.Collector.install(self.WebContainer.WebApp)
		# Envelopes are decompressed by the collector itself, with size limits (decompression bombs get 413),
		# and a per-request access log would drown the console at 1000 envelopes/s.
		self.WebContainer.WebAppRunner = aiohttp.web.AppRunner(
			self.WebContainer.WebApp,
			handle_signals=False,
			access_log=None,
			auto_decompress=False,
			keepalive_timeout=settings.idle_timeout,
		)
		server_log = logging.getLogger("aiohttp.server")
		if not any(isinstance(f, _MalformedRequests) for f in server_log.filters):
			server_log.addFilter(_MalformedRequests())
		self.PubSub.subscribe("WebContainer.started!", self._on_started)
		self.PubSub.subscribe("Application.tick/60!", self._on_tick)
		self.PubSub.subscribe("Application.tick!", self._on_second)
		self.Address: tuple[str, int] | None = None

	def _on_started(self, event_name: str, container: asab.web.WebContainer) -> None:
		if container is not self.WebContainer:
			return
		if not container.Addresses:
			# Taken between the check in __init__ and now (asab logged why): do not run listening nowhere.
			L.error("Cannot listen on {}: the collector stops.".format(":".join(_option("listen").split())))
			self.stop(1)
			return
		host, port = container.Addresses[0][:2]
		self.Address = (host, port)
		L.log(
			asab.LOG_NOTICE,
			"Collector listening",
			struct_data={"url": "http://{}:{}".format(host, port), "dsn": self.Collector.Settings.dsn(host, port)},
		)

	def _on_second(self, event_name: str) -> None:
		self.Collector.Watchdog.sweep(self.WebContainer.WebAppRunner.server)

	def _on_tick(self, event_name: str) -> None:
		self.Store.apply_retention()
