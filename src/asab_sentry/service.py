"""
`SentryService`: the ASAB service that connects an application to Sentry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import typing

import asab
import sentry_sdk
import sentry_sdk.transport
import sentry_sdk.utils
from sentry_sdk.integrations.argv import ArgvIntegration
from sentry_sdk.integrations.atexit import AtexitIntegration
from sentry_sdk.integrations.dedupe import DedupeIntegration
from sentry_sdk.integrations.excepthook import ExcepthookIntegration
from sentry_sdk.integrations.modules import ModulesIntegration
from sentry_sdk.integrations.stdlib import StdlibIntegration
from sentry_sdk.integrations.threading import ThreadingIntegration
from sentry_sdk.scrubber import EventScrubber

from . import _sdk, breadcrumbs, speed, tasks
from . import identity as identity_module
from . import logging as sentry_logging
from . import settings as settings_module
from . import tags as tags_module
from . import web as web_module
from .delivery import DeliveryOptions, DeliveryTransport, OutboxLocked
from .delivery.spotlight import SpotlightTransport
from .errors import SentryConfigError
from .tracing import Measure

L = logging.getLogger(__name__)

#: Sentry event levels accepted by `SentryService.capture_message`.
MESSAGE_LEVELS = {
	"fatal": "fatal",
	"critical": "fatal",
	"error": "error",
	"warning": "warning",
	"info": "info",
	"notice": "info",
	"debug": "debug",
}

# Set by asab_sentry.testing while a capture is active: the transport every new service uses.
_transport_override: list[typing.Any] = []


def _integrations() -> list[sentry_sdk.integrations.Integration]:
	integrations = [
		ArgvIntegration(),
		AtexitIntegration(),
		DedupeIntegration(),
		ExcepthookIntegration(),
		ModulesIntegration(),
		StdlibIntegration(),
		ThreadingIntegration(propagate_scope=True),
	]
	# No AioHttpIntegration: asab.web requests are instrumented by asab_sentry.web (leaner, and exact).
	return integrations


class SentryService(asab.Service):
	"""
	Error tracking and performance monitoring in Sentry for an ASAB application.

	Create it in the application's ``__init__`` (or in ``async initialize()``); the configuration is read
	and validated at once, and a bad value stops start-up with one line naming the option::

		class MyApplication(asab.Application):
			def __init__(self):
				super().__init__()
				import asab_sentry
				self.SentryService = asab_sentry.SentryService(self)

	From then on uncaught exceptions (``main()``, asyncio tasks and callbacks, threads) and log records at or
	above ``[sentry:logging] events`` are sent as events, records at or above ``breadcrumbs`` as breadcrumbs.

	Attributes:
		Settings: the validated configuration (`asab_sentry.settings.Settings`).
		Identity: release, server name, manifest and identity tags (`asab_sentry.identity.Identity`).
		LogHandler: the `logging.Handler` on the root logger that turns records into events and breadcrumbs.
		LoopHooks: the exception handler and task factory installed on the application's event loop.
		Delivery: the `asab_sentry.delivery.DeliveryTransport` sending to the DSN (None in the testing kit);
			``Delivery.Losses.Counters`` counts what was captured, sent, retried and dropped by reason.
		Web: the asab.web instrumentation (`asab_sentry.web.WebInstrumentation`), or None when the application
			does not use asab.web or ``[sentry:web] enabled`` is false.
	"""

	def __init__(
		self,
		app: asab.Application,
		service_name: str = "asab.SentryService",
		*,
		transport: sentry_sdk.transport.Transport | type[sentry_sdk.transport.Transport] | None = None,
	):
		"""
		Args:
			app: the ASAB application.
			service_name: the name it is registered under.
			transport: where envelopes go instead of the DSN's Sentry (advanced; the testing kit uses it).

		Raises:
			SentryConfigError: a configuration value is invalid, or no DSN is set anywhere.
		"""
		testing = bool(_transport_override) and transport is None
		if testing:
			transport = _transport_override[-1]
		self.Settings = settings_module.load_settings(asab.Config, os.environ, require_dsn=not testing)
		manifest_path = identity_module.find_manifest(asab.Config.get("general", "manifest", fallback="").strip())
		self.Identity = identity_module.build_identity(
			app_class=app.__class__.__name__,
			configured_release=self.Settings.release,
			configured_server_name=self.Settings.server_name,
			host_name=getattr(app, "HostName", None),
			manifest_path=manifest_path,
			environ=os.environ,
		)

		super().__init__(app, service_name)

		for option in self.Settings.unknown_options:
			L.warning("Unknown option {} is ignored.".format(option), extra={sentry_logging.NO_EVENT: True})

		self._init_sdk(transport, send_to_dsn=not testing)

		self.LogHandler = sentry_logging.SentryLogHandler(self.Settings.breadcrumbs_level, self.Settings.events_level)
		sentry_logging.install_handler(self.LogHandler)
		self.LoopHooks = tasks.install(app.Loop, lambda: self.LogHandler.EventsLevel, self.Settings.task_spans)
		self.Web: web_module.WebInstrumentation | None = None
		self._install_web(app)

	def _install_web(self, app: asab.Application) -> None:
		"""asab.web instrumentation, when enabled and the application uses asab.web (imported it)."""
		if self.Web is not None or not self.Settings.web.enabled or "asab.web.container" not in sys.modules:
			return
		try:
			self.Web = web_module.WebInstrumentation(self.Settings)
			web_module.install(self.Web, app, self.LoopHooks)
			self.LogHandler.Claims = self.Web.claims_record
		except Exception:
			self.Web = None
			L.warning(
				"asab.web requests are not instrumented: the instrumentation failed to install.",
				exc_info=True,
				extra={sentry_logging.NO_EVENT: True},
			)

	def _init_sdk(self, transport: typing.Any, send_to_dsn: bool) -> None:
		s = self.Settings
		if transport is None and send_to_dsn and s.dsn is not None:
			previous = delivery_transport(sentry_sdk.get_client().transport)
			if previous is not None:  # replaced by the new client: release its outbox (the files stay)
				previous.kill()
			transport = _delivery_transport(s)
		sentry_sdk.init(
			dsn=s.dsn if send_to_dsn else None,
			environment=s.environment,
			release=self.Identity.release,
			server_name=self.Identity.server_name,
			# 0 means no transactions at all: sentry-sdk at 0 would still follow a caller's sampling decision.
			traces_sample_rate=s.traces_sample_rate or None,
			sample_rate=s.sample_rate,
			max_value_length=s.max_value_length,
			include_local_variables=s.include_local_variables,
			shutdown_timeout=s.shutdown_timeout,
			debug=s.debug,
			transport=transport,
			# Spotlight is ours (SpotlightTransport, off the event loop): keep sentry-sdk's synchronous one off,
			# even when SENTRY_SPOTLIGHT is set.
			spotlight=False,
			default_integrations=False,
			auto_enabling_integrations=False,
			integrations=_integrations(),
			before_send=breadcrumbs.restore if speed.ENABLED else None,
			# [sentry] send_default_pii is ours (sentry-sdk's option is deprecated): its scrubber must keep the
			# user's IP address then.
			event_scrubber=EventScrubber(send_default_pii=True) if s.send_default_pii else None,
		)
		client = sentry_sdk.get_client()
		self.Delivery = delivery_transport(client.transport)
		_sdk.quiet_internal_logger(not client.options.get("debug"))
		if speed.ENABLED:
			breadcrumbs.install()
		_sdk.use_fast_serializer(speed.ENABLED)
		_sdk.use_source_cache(speed.ENABLED)
		if s.spotlight is not None and send_to_dsn:
			client.transport = SpotlightTransport(client.options, s.spotlight, client.transport)
		scope = sentry_sdk.get_global_scope()
		for key in ("appclass", *identity_module.IDENTITY_VARIABLES.values()):
			scope.remove_tag(key)  # a service created again (e.g. a restarted app in tests) starts clean
		for key, value in self.Identity.tags.items():
			scope.set_tag(key, value)
		if self.Identity.manifest:
			scope.set_context("manifest", dict(self.Identity.manifest))

	async def initialize(self, app: asab.Application) -> None:
		"""
		Instrument asab.web (it may have been imported after the service was created), and publish the
		delivery's counters through asab.metrics when the application has the MetricsService.
		"""
		self._install_web(app)
		delivery = getattr(self, "Delivery", None)
		metrics_service = app.get_service("asab.MetricsService")
		if delivery is not None and metrics_service is not None:
			from .delivery.metrics import DeliveryMetrics

			self.DeliveryMetrics = DeliveryMetrics(app, metrics_service, delivery)

	async def finalize(self, app: asab.Application) -> None:
		"""Send what is pending, waiting at most ``[sentry] shutdown_timeout``, without blocking the event loop."""
		# Let services finalized at the same time log their last errors first.
		for _ in range(3):
			await asyncio.sleep(0)
		try:
			self.LoopHooks.check_unretrieved(everything=True)
		except Exception:
			sentry_sdk.utils.capture_internal_exception(sys.exc_info())
		client = sentry_sdk.get_client()
		if not client.is_active():
			return
		timeout = self.Settings.shutdown_timeout
		delivery = delivery_transport(client.transport)
		if delivery is not None:
			# Starts the one exit deadline that sentry-sdk's atexit flush shares; warns once about what is left.
			await asyncio.get_running_loop().run_in_executor(None, delivery.shutdown, timeout)
			return
		flushing = asyncio.get_running_loop().run_in_executor(None, client.flush, timeout)
		try:
			await asyncio.wait_for(asyncio.shield(flushing), timeout=timeout + 1.0)
		except asyncio.TimeoutError:
			L.warning(
				"Events still pending after shutdown_timeout={}s.".format(timeout),
				extra={sentry_logging.NO_EVENT: True},
			)

	# Capturing

	def capture_exception(self, error: BaseException | None = None, **scope_kwargs: typing.Any) -> str | None:
		"""
		Send an exception to Sentry as an event (with its stack trace and local variables).

		Args:
			error: the exception; when None, the one being handled (``sys.exc_info()``).
			scope_kwargs: data for this event only, as sentry-sdk takes it: ``tags`` (validated like `set_tag`),
				``extras``, ``contexts``, ``fingerprint``, ``level``, ``user``; or ``scope``.

		Returns:
			The event id, or None when nothing was sent (no exception, filtered or sampled out).

		Example:
			```python
			try:
				call_collapsing_function()
			except Exception as e:
				sentry_service.capture_exception(e)
			```
		"""
		try:
			if error is None and sys.exc_info()[1] is None:
				L.warning(
					"capture_exception() called with no exception and none being handled; nothing sent.",
					extra={sentry_logging.NO_EVENT: True},
				)
				return None
			return sentry_sdk.capture_exception(error, **_checked_scope_kwargs(scope_kwargs))
		except Exception:
			sentry_sdk.utils.capture_internal_exception(sys.exc_info())
			return None

	def capture_message(self, message: str, level: str | None = None, **scope_kwargs: typing.Any) -> str | None:
		"""
		Send a text message to Sentry as an event.

		Args:
			message: the text; messages with the same text are grouped into one issue.
			level: ``fatal``, ``error``, ``warning``, ``info`` (default) or ``debug``
				(``critical`` and ``notice`` are accepted as ``fatal`` and ``info``).
			scope_kwargs: data for this event only, as in `capture_exception`.

		Returns:
			The event id, or None when nothing was sent.

		Example:
			```python
			if required_variable is None:
				sentry_service.capture_message("required_variable was not set")
			```
		"""
		try:
			sentry_level = "info"
			if level is not None:
				sentry_level = MESSAGE_LEVELS.get(str(level).lower(), "")
				if not sentry_level:
					L.error(
						"capture_message(level={!r}) is not a Sentry level (allowed: fatal, error, warning, info, debug); "
						"sent as 'info'.".format(level),
						extra={sentry_logging.NO_EVENT: True},
					)
					sentry_level = "info"
			return sentry_sdk.capture_message(str(message), level=sentry_level, **_checked_scope_kwargs(scope_kwargs))  # type: ignore[arg-type]
		except Exception:
			sentry_sdk.utils.capture_internal_exception(sys.exc_info())
			return None

	def set_context(self, name: str, context: dict[str, typing.Any]) -> None:
		"""
		Attach a named block of structured data to the following events of the current scope
		(see `set_tag` for what the current scope is).

		Example:
			```python
			sentry_service.set_context("import", {"file": path, "rows": 1200})
			```
		"""
		if not isinstance(context, dict):
			L.error(
				"Context {!r} not set: it must be a dict, not {}.".format(name, type(context).__name__),
				extra={sentry_logging.NO_EVENT: True},
			)
			return
		_current_scope().set_context(str(name), context)

	def set_tag(self, key: str, value: str | int | float | bool) -> None:
		"""
		Add a searchable tag to the following events of the current scope.

		The current scope is:

		- inside an asyncio task (``main()``, a handler of a web request, a task you started): that task,
		and the tasks it starts afterwards. Concurrent tasks and requests do not see it.
		- in a thread other than the main one: that thread.
		- anywhere else (the application's ``__init__``, module level): the whole process, i.e. every later
		event of every task and thread.

		A key has 1–32 characters of ``a-zA-Z0-9_.:-``; a value 1–200 characters and no newline; int, float
		and bool values are converted to str. An invalid tag is not set and one error is logged that names the
		key and the reason; it never raises.

		Example:
			```python
			sentry_service.set_tag("method", "my_function")
			```
		"""
		try:
			key, value = tags_module.validate_tag(key, value)
		except tags_module.InvalidTag as e:
			L.error(str(e), extra={sentry_logging.NO_EVENT: True})
			return
		_current_scope().set_tag(key, value)

	def set_tags(self, tags: typing.Mapping[str, str | int | float | bool]) -> None:
		"""
		Add several tags at once (see `set_tag`): the valid ones are set, each invalid one is reported.

		Example:
			```python
			sentry_service.set_tags({"foo": "bar", "fooz": "buzz"})
			```
		"""
		if not isinstance(tags, typing.Mapping):
			L.error(
				"set_tags() needs a dict of tags, not {}; nothing set.".format(type(tags).__name__),
				extra={sentry_logging.NO_EVENT: True},
			)
			return
		for key, value in tags.items():
			self.set_tag(key, value)

	# Performance monitoring

	def transaction(self, op: str, name: str) -> Measure:
		"""
		A transaction: the measured operation, e.g. a background job or a request.

		Use it as ``with`` / ``async with`` block or as a decorator of a sync or async function.
		Sampled by ``[sentry] traces_sample_rate`` (default 0: nothing is sent).

		Args:
			op: the kind of operation, e.g. ``"task"``.
			name: the transaction's name; transactions are grouped by it.

		Example:
			```python
			with sentry_service.transaction("speed test", "test sleeping"):
				time.sleep(1.0)
			```
		"""
		return Measure("transaction", op, name)

	def span(self, op: str, description: str) -> Measure:
		"""
		A child span of the running transaction (or span). Outside any transaction it does nothing.

		Use it as ``with`` / ``async with`` block or as a decorator of a sync or async function.

		Example:
			```python
			with sentry_service.transaction("speed test", "multiple tasks"):
				with sentry_service.span("task", "task1"):
					task1()
			```
		"""
		return Measure("span", op, description)


def delivery_transport(transport: typing.Any) -> DeliveryTransport | None:
	"""Our `DeliveryTransport` behind sentry-sdk's client transport (possibly wrapped by Spotlight), or None."""
	for _ in range(3):
		if isinstance(transport, DeliveryTransport):
			return transport
		transport = getattr(transport, "Upstream", None)
	return None


def _delivery_transport(s: settings_module.Settings) -> DeliveryTransport:
	"""The transport that replaces sentry-sdk's HttpTransport, configured by ``[sentry]``."""
	options = DeliveryOptions(
		queue_max_size=s.queue_max_size,
		max_concurrent_requests=s.max_concurrent_requests,
		request_timeout=s.request_timeout,
		shutdown_timeout=s.shutdown_timeout,
		outbox=s.outbox,
		outbox_max_size=s.outbox_max_size,
		outbox_max_age=s.outbox_max_age,
	)
	try:
		return DeliveryTransport({"dsn": s.dsn, "send_client_reports": True}, options)
	except OutboxLocked as e:
		raise SentryConfigError(
			settings_module.SECTION,
			"outbox",
			s.outbox,
			"the directory is in use by another process{}; each process needs its own outbox directory".format(
				" (pid {})".format(e.Holder) if e.Holder else ""
			),
		)
	except OSError as e:
		raise SentryConfigError(settings_module.SECTION, "outbox", s.outbox, "cannot be used: {}".format(e))


def _checked_scope_kwargs(scope_kwargs: dict[str, typing.Any]) -> dict[str, typing.Any]:
	"""Per-event ``tags=`` are validated like `SentryService.set_tag`: invalid ones are left out and reported."""
	tags = scope_kwargs.get("tags")
	if not tags:
		return scope_kwargs
	valid = {}
	for key, value in dict(tags).items():
		try:
			key, value = tags_module.validate_tag(key, value)
		except tags_module.InvalidTag as e:
			L.error(str(e), extra={sentry_logging.NO_EVENT: True})
			continue
		valid[key] = value
	return dict(scope_kwargs, tags=valid)


def _current_scope() -> sentry_sdk.Scope:
	"""The scope `SentryService.set_tag` writes to; see its docstring."""
	try:
		asyncio.get_running_loop()
		in_task = asyncio.current_task() is not None
	except RuntimeError:
		in_task = False
	if in_task or threading.current_thread() is not threading.main_thread():
		return sentry_sdk.get_isolation_scope()
	return sentry_sdk.get_global_scope()
