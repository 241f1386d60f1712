"""
`SentryService`: the ASAB service that connects an application to Sentry.
"""

from __future__ import annotations

import asyncio
import enum
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

from . import _sdk, breadcrumbs, levels, limits, notices, scrub, speed, tasks
from . import capture as capture_module
from . import identity as identity_module
from . import logging as sentry_logging
from . import settings as settings_module
from . import tags as tags_module
from . import tracing as tracing_module
from . import web as web_module
from .delivery import DeliveryOptions, DeliveryTransport, OutboxLocked
from .delivery.http import CertificatesError
from .delivery.process import ProcessDelivery
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
		Delivery: the `asab_sentry.delivery.DeliveryTransport` sending to the DSN, or with ``[sentry] delivery =
			process`` the `asab_sentry.delivery.process.ProcessDelivery` handing envelopes to its delivery process
			(None in the testing kit);
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
		for variable in self.Settings.repaired_variables + self.Identity.repaired_variables:
			L.warning(
				"Environment variable {} is not valid UTF-8 text; its invalid bytes are sent as U+FFFD.".format(
					variable
				),
				extra={sentry_logging.NO_EVENT: True},
			)

		self._init_sdk(transport, send_to_dsn=not testing)

		self.LogHandler = sentry_logging.SentryLogHandler(self.Settings.breadcrumbs_level, self.Settings.events_level)
		sentry_logging.install_handler(self.LogHandler)
		# ASAB's root level (NOTICE without -v) would keep INFO breadcrumbs from ever being created.
		wanted = [level for level in (self.Settings.breadcrumbs_level, self.Settings.events_level) if level is not None]
		levels.open_root(min(wanted) if wanted else None, keep=sentry_logging.SentryLogHandler)
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
			self.LogHandler.IgnoredPath = self.Web.IgnoredPath
		except Exception:
			self.Web = None
			L.warning(
				"asab.web requests are not instrumented: the instrumentation failed to install.",
				exc_info=True,
				extra={sentry_logging.NO_EVENT: True},
			)

	def _init_sdk(self, transport: typing.Any, send_to_dsn: bool) -> None:
		s = self.Settings
		# The last step before an event or transaction is sent: scrubbed, valid text, within Sentry's limits.
		# (Log breadcrumbs serialized once are put back into the event first, see breadcrumbs.py.)
		final_pass = limits.FinalPass(
			scrub.configure(s.scrub_keys),
			before=breadcrumbs.restore if speed.ENABLED else None,
			keep_encoding=speed.ENABLED,
		)
		limits.install(final_pass)
		capture_module.install()
		if transport is None and send_to_dsn and s.dsn is not None:
			previous = delivery_transport(sentry_sdk.get_client().transport)
			if previous is not None:  # replaced by the new client: release its outbox (the files stay)
				previous.kill()
			transport = _delivery_transport(s)
		sentry_sdk.init(
			before_send=final_pass,
			before_send_transaction=final_pass,
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
		_sdk.use_breadcrumb_order(breadcrumbs.LogBreadcrumb if speed.ENABLED else None)
		if speed.ENABLED and "modules" in client.integrations:
			_sdk.warm_up()  # the first event's one-off work, off the event loop
		if s.spotlight is not None and send_to_dsn:
			client.transport = SpotlightTransport(client.options, s.spotlight, client.transport)
		# The delivery process finishes the final pass of error events (scrubbing, size limits, encoding), off the
		# event loop; not when Spotlight (or anything else) needs the finished event in this process, nor when it was
		# started before this pass was configured (a ProcessDelivery given as ``transport``).
		final_pass.Defer = (
			speed.ENABLED
			and type(client.transport) is ProcessDelivery
			and type(final_pass.Scrubber or scrub.active()) is scrub.Scrubber
			and client.transport.finishes_as(final_pass)
		)
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
		spotlight = client.transport if isinstance(client.transport, SpotlightTransport) else None
		if delivery is not None or spotlight is not None:
			# Starts the one exit deadline that sentry-sdk's atexit flush shares; warns once about what is left.
			# The delivery and Spotlight wait side by side: together at most shutdown_timeout.
			loop = asyncio.get_running_loop()
			await asyncio.gather(
				*(
					loop.run_in_executor(None, transport.shutdown, timeout)
					for transport in (delivery, spotlight)
					if transport is not None
				)
			)
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
				``extras``, ``contexts``, ``fingerprint``, ``level``, ``user``; or ``scope``. A bad or unknown
				one is left out with one line on the ``asab_sentry`` logger; the event is sent.

		Returns:
			The event id, or None when nothing was sent (no exception, filtered or sampled out).

		Never raises.

		Example:
			```python
			try:
				call_collapsing_function()
			except Exception as e:
				sentry_service.capture_exception(e)
			```
		"""
		try:
			kwargs = _checked_scope_kwargs("capture_exception", scope_kwargs)
			if error is None and sys.exc_info()[1] is None:
				L.warning(
					"capture_exception() called with no exception and none being handled; nothing sent.",
					extra={sentry_logging.NO_EVENT: True},
				)
				return None
			if error is not None and not isinstance(error, BaseException):
				notices.say(
					"capture_exception argument",
					"capture_exception() needs an exception, got {}; sent as a message instead.".format(
						type(error).__name__
					),
					logging.ERROR,
					L,
				)
				kwargs.setdefault("level", "error")
				if "scope" in kwargs:
					kwargs = {"scope": kwargs["scope"]}
				return sentry_sdk.capture_message(notices.safe_str(error), **kwargs)
			return sentry_sdk.capture_exception(error, **kwargs)
		except Exception as e:
			_failed("capture_exception", e)
			return None

	def capture_message(self, message: str, level: str | int | None = None, **scope_kwargs: typing.Any) -> str | None:
		"""
		Send a text message to Sentry as an event.

		Args:
			message: the text; messages with the same text are grouped into one issue. Not a string: its ``str()``.
			level: ``fatal``, ``error``, ``warning``, ``info`` (default) or ``debug``
				(``critical`` and ``notice`` are accepted as ``fatal`` and ``info``; a logging level number such
				as ``logging.WARNING`` or ``asab.LOG_NOTICE`` as a log record of that level).
			scope_kwargs: data for this event only, as in `capture_exception`.

		Returns:
			The event id, or None when nothing was sent.

		Never raises.

		Example:
			```python
			if required_variable is None:
				sentry_service.capture_message("required_variable was not set")
			```
		"""
		try:
			kwargs = _checked_scope_kwargs("capture_message", scope_kwargs)
			sentry_level = "info"
			if level is not None:
				sentry_level = _level(level) or ""
				if not sentry_level:
					notices.say(
						"capture_message level",
						"capture_message(level={}) is not a Sentry level (allowed: fatal, error, warning, info, debug); "
						"sent as 'info'.".format(notices.safe_repr(level)),
						logging.ERROR,
						L,
					)
					sentry_level = "info"
			text = message if type(message) is str else notices.safe_str(message)
			return sentry_sdk.capture_message(text, level=sentry_level, **kwargs)  # type: ignore[arg-type]
		except Exception as e:
			_failed("capture_message", e)
			return None

	@typing.overload
	def set_context(self, name: str, context: dict[str, typing.Any]) -> None: ...
	@typing.overload
	def set_context(self, *, section_name: str, context: dict[str, typing.Any]) -> None: ...
	def set_context(
		self, name: typing.Any = None, context: typing.Any = None, *, section_name: typing.Any = None
	) -> None:
		"""
		Attach a named block of structured data to the following events of the current scope
		(see `set_tag` for what the current scope is). ``section_name=`` is asab.sentry's name of ``name``.

		The data is copied at once within limits (5 levels deep, 1000 items per level, 10000 values in all,
		strings cut at ``max_value_length``), so it cannot make later events unusable. ``trace`` is Sentry's
		own context and cannot be set; a context that is not a mapping is refused with one line. Never raises.

		Example:
			```python
			sentry_service.set_context("import", {"file": path, "rows": 1200})
			```
		"""
		try:
			checked = _checked_context(_either(name, section_name), context, "set_context")
			if checked is not None:
				_current_scope().set_context(*checked)
		except Exception as e:
			_failed("set_context", e)

	def set_tag(self, key: str, value: str | int | float | bool) -> None:
		"""
		Add a searchable tag to the following events of the current scope.

		The current scope is:

		- inside an asyncio task (``main()``, a handler of a web request, a task you started): that task,
		and the tasks it starts afterwards. Concurrent tasks and requests do not see it.
		- in a thread other than the main one: that thread.
		- anywhere else (the application's ``__init__``, module level): the whole process, i.e. every later
		event of every task and thread.

		A key has 1–32 characters of ``a-zA-Z0-9_.:-`` and is none of those Sentry removes from every event
		(``release``, ``dist``, ``environment``, ``user``, ``filename``, ``function``); a value 1–200 characters,
		not only whitespace, and no newline; int, float and bool values are converted to str. An invalid tag is not set and one error is
		logged that names the key and the reason; it never raises.

		Example:
			```python
			sentry_service.set_tag("method", "my_function")
			```
		"""
		try:
			try:
				key, value = tags_module.validate_tag(key, value)
			except tags_module.InvalidTag as e:
				notices.say("tag " + notices.safe_repr(key, 40), str(e), logging.ERROR, L)
				return
			_current_scope().set_tag(key, value)
		except Exception as e:
			_failed("set_tag", e)

	@typing.overload
	def set_tags(self, tags: typing.Mapping[str, str | int | float | bool]) -> None: ...
	@typing.overload
	def set_tags(self, *, tags_dict: typing.Mapping[str, str | int | float | bool]) -> None: ...
	def set_tags(self, tags: typing.Any = None, *, tags_dict: typing.Any = None) -> None:
		"""
		Add several tags at once (see `set_tag`): the valid ones are set, each invalid one is reported.
		``tags_dict=`` is asab.sentry's name of ``tags``.

		Example:
			```python
			sentry_service.set_tags({"foo": "bar", "fooz": "buzz"})
			```
		"""
		try:
			tags = _either(tags, tags_dict)
			if not isinstance(tags, typing.Mapping):
				notices.say(
					"set_tags argument",
					"set_tags() needs a dict of tags, not {}; nothing set.".format(type(tags).__name__),
					logging.ERROR,
					L,
				)
				return
			for key, value in list(tags.items()):
				self.set_tag(key, value)
		except Exception as e:
			_failed("set_tags", e)

	# Performance monitoring

	@typing.overload
	def transaction(self, op: str, name: str) -> Measure: ...
	@typing.overload
	def transaction(self, *, span_operation: str, span_name: str) -> Measure: ...
	def transaction(
		self,
		op: typing.Any = None,
		name: typing.Any = None,
		*,
		span_operation: typing.Any = None,
		span_name: typing.Any = None,
	) -> Measure:
		"""
		A transaction: the measured operation, e.g. a background job or a request. ``span_operation=`` and
		``span_name=`` are asab.sentry's names of ``op`` and ``name``.

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
		return Measure("transaction", _either(op, span_operation), _either(name, span_name))

	@typing.overload
	def span(self, op: str, description: str) -> Measure: ...
	@typing.overload
	def span(self, *, operation: str, description: str) -> Measure: ...
	def span(self, op: typing.Any = None, description: typing.Any = None, *, operation: typing.Any = None) -> Measure:
		"""
		A child span of the running transaction (or span). Outside any transaction it does nothing.
		``operation=`` is asab.sentry's name of ``op``.

		Use it as ``with`` / ``async with`` block or as a decorator of a sync or async function.

		Example:
			```python
			with sentry_service.transaction("speed test", "multiple tasks"):
				with sentry_service.span("task", "task1"):
					task1()
			```
		"""
		return Measure("span", _either(op, operation), description)


def _either(value: typing.Any, alias: typing.Any) -> typing.Any:
	"""An argument given by its name or by asab.sentry's name for it (code written for asab.sentry keeps working)."""
	return alias if value is None else value


def delivery_transport(transport: typing.Any) -> DeliveryTransport | ProcessDelivery | None:
	"""
	Our `DeliveryTransport` (or `ProcessDelivery`) behind sentry-sdk's client transport (possibly wrapped by
	Spotlight), or None.
	"""
	for _ in range(3):
		if isinstance(transport, (DeliveryTransport, ProcessDelivery)):
			return transport
		transport = getattr(transport, "Upstream", None)
	return None


def _delivery_transport(s: settings_module.Settings) -> DeliveryTransport | ProcessDelivery:
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
		if s.delivery == "process":
			return ProcessDelivery({"dsn": s.dsn, "send_client_reports": True}, options)
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
	except CertificatesError as e:
		raise SentryConfigError("environment", e.Variable, e.Path, str(e))
	except OSError as e:
		raise SentryConfigError(settings_module.SECTION, "outbox", s.outbox, "cannot be used: {}".format(e))


#: The per-event keyword arguments of `SentryService.capture_exception` / `capture_message`.
SCOPE_KWARGS = ("tags", "extras", "contexts", "fingerprint", "level", "user", "scope")


def _level(level: object) -> str | None:
	if isinstance(level, int) and not isinstance(level, bool) and level >= 0:
		return sentry_logging.sentry_level(level)  # logging.WARNING: sent as 'info' (with a line) before
	try:
		return MESSAGE_LEVELS.get(notices.safe_str(level).lower())
	except Exception:
		return None


def _failed(method: str, error: BaseException) -> None:
	notices.say(
		method,
		"{}() failed; nothing was done ({}: {}).".format(method, type(error).__name__, notices.safe_str(error)),
		logging.ERROR,
		L,
	)


def _refuse(method: str, name: str, reason: str) -> None:
	notices.say(
		"{} {}".format(method, name),
		"{}({}=...) {}; the Sentry event is sent without it.".format(method, name, reason),
		logging.ERROR,
		L,
	)


def _checked_context(name: object, context: object, method: str) -> tuple[str, dict[str, typing.Any]] | None:
	"""A context's name and bounded data, or None (and one line) when it cannot be used."""
	text = name if type(name) is str else notices.safe_str(name)
	if text.strip() == "" or text == "trace":
		notices.say(
			"{} name".format(method),
			"{}(): a context cannot be named {} (empty, or 'trace': Sentry's own tracing context); not set.".format(
				method, notices.safe_repr(text)
			),
			logging.ERROR,
			L,
		)
		return None
	if not isinstance(context, typing.Mapping):
		notices.say(
			"{} value".format(method),
			"{}(): context {} not set: it must be a dict, not {}.".format(
				method, notices.safe_repr(text), type(context).__name__
			),
			logging.ERROR,
			L,
		)
		return None
	data = limits.bounded(context)
	if not isinstance(data, dict):
		notices.say(
			"{} value".format(method),
			"{}(): context {} not set: {}.".format(method, notices.safe_repr(text), data),
			logging.ERROR,
			L,
		)
		return None
	return text, data


def _checked_scope_kwargs(method: str, scope_kwargs: dict[str, typing.Any]) -> dict[str, typing.Any]:
	"""
	The per-event data as sentry-sdk can use it. Unknown names and unusable values are left out, each with one
	line; ``tags`` are validated like `SentryService.set_tag`, ``contexts`` like `SentryService.set_context`.
	"""
	checked: dict[str, typing.Any] = {}
	for name, value in scope_kwargs.items():
		if value is None:
			continue
		if name not in SCOPE_KWARGS:
			_refuse(method, name, "is not a known argument (allowed: {})".format(", ".join(SCOPE_KWARGS)))
			continue
		try:
			if name == "tags":
				if not isinstance(value, typing.Mapping):
					_refuse(method, name, "needs a dict of tags, not {}".format(type(value).__name__))
					continue
				valid = {}
				for key, tag_value in list(value.items()):
					try:
						key, tag_value = tags_module.validate_tag(key, tag_value)
					except tags_module.InvalidTag as e:
						notices.say("tag " + notices.safe_repr(key, 40), str(e), logging.ERROR, L)
						continue
					valid[key] = tag_value
				checked[name] = valid
			elif name in ("extras", "user"):
				if not isinstance(value, typing.Mapping):
					_refuse(method, name, "needs a dict, not {}".format(type(value).__name__))
					continue
				checked[name] = {notices.safe_str(k): v for k, v in list(value.items())}
			elif name == "contexts":
				if not isinstance(value, typing.Mapping):
					_refuse(method, name, "needs a dict of contexts, not {}".format(type(value).__name__))
					continue
				contexts = {}
				for context_name, context in list(value.items()):
					one = _checked_context(context_name, context, method)
					if one is not None:
						contexts[one[0]] = one[1]
				checked[name] = contexts
			elif name == "fingerprint":
				fingerprint = _fingerprint(value)
				if fingerprint is None:
					_refuse(method, name, "needs a list of strings, not {}".format(notices.safe_repr(value, 60)))
					continue
				checked[name] = fingerprint
			elif name == "level":
				level = _level(value)
				if level is None:
					_refuse(method, name, "is not a Sentry level (allowed: fatal, error, warning, info, debug)")
					continue
				checked[name] = level
			elif name == "scope":
				if not isinstance(value, sentry_sdk.Scope):
					_refuse(method, name, "needs a sentry_sdk.Scope, not {}".format(type(value).__name__))
					continue
				checked[name] = value
		except Exception as e:
			_refuse(method, name, "cannot be read ({}: {})".format(type(e).__name__, notices.safe_str(e)))
	if "scope" in checked and len(checked) > 1:
		others = ", ".join(sorted(k for k in checked if k != "scope"))
		_refuse(method, others, "cannot be combined with scope=")
		checked = {"scope": checked["scope"]}
	return checked


def _fingerprint(value: object) -> list[str] | None:
	"""A fingerprint as a list of strings (numbers and enum members converted), or None when it is not one."""
	if isinstance(value, str):
		return [str.__str__(value)]
	if not isinstance(value, (list, tuple)) or not value:
		return None
	parts = []
	for part in value:
		if isinstance(part, (str, int, float, enum.Enum)) and not isinstance(part, bool):
			parts.append(tracing_module.text(part, "fingerprint part"))
		else:
			return None
	return parts


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
