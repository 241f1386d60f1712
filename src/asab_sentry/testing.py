"""
Assert on what a service sends to Sentry, in its own test suite.

The real sentry-sdk pipeline runs — scopes, integrations, event processors, ``before_send``,
serialization — and only the last step differs: envelopes are kept in memory instead of being sent.

With pytest (the plugin is registered when the package is installed; the fixture acts only when a test
asks for it)::

	def test_error_is_reported(sentry_capture):
		sentry_capture.configure({"sentry:logging": {"events": "warning"}})
		app = MyApplication()          # creates its SentryService as usual; no DSN needed
		logging.getLogger("x").warning("disk almost full")
		event = sentry_capture.find(level="warning", message="disk almost full")
		assert event["tags"]["appclass"] == "MyApplication"

Without pytest (e.g. asab's own unittest style)::

	with asab_sentry.testing.capture_sentry({"sentry": {"environment": "test"}}) as capture:
		app = MyApplication()
		...
		assert capture.find(exception_type="ValueError")

While a capture is active, ``sys.argv`` holds only the program name (asab parses the command line when an
Application is created without ``args``) and the environment variables this package reads are unset.
Leaving the context (or the fixture's teardown) restores sentry-sdk, the asab Application singleton,
``asab.Config``, the root logger, the event loop's hooks, ``sys.argv`` and the environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import logging
import os
import sys
import threading
import time
import typing
import warnings

import sentry_sdk.transport
from sentry_sdk.envelope import Envelope

from . import _sdk, levels, limits, notices, payload, scrub, service, tasks, web
from . import logging as sentry_logging

__all__ = ["CaptureTransport", "SentryCapture", "capture_sentry", "on_envelope", "sentry_capture"]

#: Environment variables this package reads; cleared while a capture is active and restored afterwards.
ENVIRONMENT_VARIABLES = (
	"SENTRY_DSN",
	"SENTRY_ENVIRONMENT",
	"SENTRY_RELEASE",
	"SENTRY_SPOTLIGHT",
	"NODE_ID",
	"SERVICE_ID",
	"INSTANCE_ID",
	"SITE_ID",
)

if typing.TYPE_CHECKING:
	import asab

Criteria = dict[str, typing.Any]
_T = typing.TypeVar("_T")
_App = typing.TypeVar("_App", bound="asab.Application")
_listeners: list[typing.Callable[[Envelope], None]] = []


def on_envelope(listener: typing.Callable[[Envelope], None]) -> typing.Callable[[], None]:
	"""
	Call ``listener`` with every envelope any capture receives (e.g. to validate events); returns a function
	that removes it.
	"""
	_listeners.append(listener)
	return lambda: _listeners.remove(listener) if listener in _listeners else None


class CaptureTransport(sentry_sdk.transport.Transport):
	"""
	A sentry-sdk transport that serializes each envelope as it would be sent, and keeps it. Payloads the final
	pass encoded already are sent as those bytes, as `asab_sentry.delivery.DeliveryTransport` sends them.
	"""

	def __init__(self, capture: SentryCapture, options: dict | None = None):
		super().__init__(options)
		self.Capture = capture

	def capture_envelope(self, envelope: Envelope) -> None:
		buffer = io.BytesIO()
		limits.fill_encoded(envelope)
		envelope.serialize_into(buffer)
		self.Capture._receive(Envelope.deserialize(buffer.getvalue()))

	def flush(self, timeout: float, callback: typing.Any = None) -> None:
		return None


class SentryCapture:
	"""
	What would have been sent to Sentry.

	Attributes:
		envelopes: every envelope, deserialized from the bytes that would have gone over the wire.
		events: the payloads of error and message events.
		transactions: the payloads of transactions.
	"""

	def __init__(self) -> None:
		self.envelopes: list[Envelope] = []
		self.events: list[dict[str, typing.Any]] = []
		self.transactions: list[dict[str, typing.Any]] = []
		self.Transport = CaptureTransport(self)
		self._changed = threading.Condition()

	# Receiving

	def _receive(self, envelope: Envelope) -> None:
		with self._changed:
			self.envelopes.append(envelope)
			for item in envelope.items:
				if item.type == "event":
					self.events.append(item.payload.json)
				elif item.type == "transaction":
					self.transactions.append(item.payload.json)
			self._changed.notify_all()
		for listener in list(_listeners):
			listener(envelope)

	def clear(self) -> None:
		"""Forget everything captured so far."""
		with self._changed:
			self.envelopes.clear()
			self.events.clear()
			self.transactions.clear()

	# Configuration and application

	def configure(self, config: dict[str, dict[str, typing.Any]] | str) -> None:
		"""
		Add configuration for the SentryService (and the rest of the application) before it is created.

		Args:
			config: ``{"section": {"option": value}}`` or INI text.
		"""
		import asab

		if isinstance(config, str):
			asab.Config.read_string(config)
		else:
			asab.Config.read_dict(
				{section: {k: str(v) for k, v in options.items()} for section, options in config.items()}
			)

	@typing.overload
	def application(self, app_class: None = None, **kwargs: typing.Any) -> asab.Application: ...
	@typing.overload
	def application(self, app_class: type[_App], **kwargs: typing.Any) -> _App: ...
	def application(self, app_class: type[asab.Application] | None = None, **kwargs: typing.Any) -> asab.Application:
		"""
		Create an asab Application (``args=[]`` unless given) and make sure it has a SentryService.

		Returns:
			The application; its service is ``app.get_service("asab.SentryService")``.
		"""
		import asab

		app_class = app_class or asab.Application
		kwargs.setdefault("args", [])
		app = app_class(**kwargs)
		if not any(isinstance(s, service.SentryService) for s in app.Services.values()):
			service.SentryService(app)
		return app

	# Querying

	def find_all(
		self,
		*,
		type: str = "event",
		level: str | None = None,
		message: str | None = None,
		exception_type: str | None = None,
		tag: tuple[str, str] | None = None,
		tags: dict[str, str] | None = None,
		logger: str | None = None,
	) -> list[dict[str, typing.Any]]:
		"""
		Every captured event (``type="transaction"``: transaction) matching all the given criteria.

		Args:
			level: Sentry level, e.g. ``"error"``.
			message: a substring of the message (formatted log message, capture_message text) or title.
			exception_type: the type name of the (last) exception, e.g. ``"ValueError"``.
			tag: one ``(key, value)`` the event must have; ``tags``: several.
			logger: the logger name of a logging event.
		"""
		pool = self.transactions if type == "transaction" else self.events
		wanted_tags = dict(tags or {})
		if tag is not None:
			wanted_tags[tag[0]] = tag[1]
		found = []
		for event in list(pool):
			if level is not None and event.get("level") != level:
				continue
			if message is not None and message not in _texts(event):
				continue
			if exception_type is not None and exception_type not in [e.get("type") for e in payload.exceptions(event)]:
				continue
			if logger is not None and event.get("logger") != logger:
				continue
			event_tags = payload.tags(event)
			if any(event_tags.get(k) != v for k, v in wanted_tags.items()):
				continue
			found.append(event)
		return found

	def find(self, **criteria: typing.Any) -> dict[str, typing.Any]:
		"""
		The first captured event matching the criteria of `find_all`.

		Raises:
			AssertionError: nothing matches; the message lists what was captured (type, level, title, tags).
		"""
		found = self.find_all(**criteria)
		if not found:
			raise AssertionError(self._mismatch(criteria))
		return found[0]

	def _mismatch(self, criteria: Criteria) -> str:
		wanted = ", ".join("{}={!r}".format(k, v) for k, v in criteria.items()) or "anything"
		lines = ["No captured {} matches {}.".format(criteria.get("type", "event"), wanted)]
		captured = [("event", e) for e in self.events] + [("transaction", t) for t in self.transactions]
		if not captured:
			lines.append("Nothing was captured.")
		else:
			lines.append("Captured ({}):".format(len(captured)))
			for kind, event in captured:
				lines.append(
					"  - {} level={} title={!r} logger={} tags={}".format(
						kind, event.get("level"), payload.title(event), event.get("logger"), payload.tags(event)
					)
				)
		return "\n".join(lines)

	@typing.overload
	async def wait_for(
		self, predicate: None = None, timeout: float = 5.0, **criteria: typing.Any
	) -> dict[str, typing.Any]: ...
	@typing.overload
	async def wait_for(
		self, predicate: typing.Callable[[SentryCapture], _T], timeout: float = 5.0, **criteria: typing.Any
	) -> _T: ...
	async def wait_for(
		self,
		predicate: typing.Callable[[SentryCapture], typing.Any] | None = None,
		timeout: float = 5.0,
		**criteria: typing.Any,
	) -> typing.Any:
		"""
		Wait (without blocking the event loop) until ``predicate(capture)`` is true, or until an event matches
		``criteria``; return the predicate's value or the event.

		Raises:
			AssertionError: on timeout, with what was captured.
		"""
		deadline = time.monotonic() + timeout
		while True:
			result = self._check(predicate, criteria)
			if result:
				return result
			if time.monotonic() >= deadline:
				raise AssertionError("Timed out after {}s. ".format(timeout) + self._mismatch(criteria))
			await asyncio.sleep(0.01)

	@typing.overload
	def wait(self, predicate: None = None, timeout: float = 5.0, **criteria: typing.Any) -> dict[str, typing.Any]: ...
	@typing.overload
	def wait(
		self, predicate: typing.Callable[[SentryCapture], _T], timeout: float = 5.0, **criteria: typing.Any
	) -> _T: ...
	def wait(
		self,
		predicate: typing.Callable[[SentryCapture], typing.Any] | None = None,
		timeout: float = 5.0,
		**criteria: typing.Any,
	) -> typing.Any:
		"""The blocking variant of `wait_for`, for code outside an event loop (e.g. events from threads)."""
		deadline = time.monotonic() + timeout
		with self._changed:
			while True:
				result = self._check(predicate, criteria)
				if result:
					return result
				remaining = deadline - time.monotonic()
				if remaining <= 0:
					raise AssertionError("Timed out after {}s. ".format(timeout) + self._mismatch(criteria))
				self._changed.wait(remaining)

	def _check(self, predicate: typing.Callable[[SentryCapture], typing.Any] | None, criteria: Criteria) -> typing.Any:
		if predicate is not None:
			return predicate(self)
		found = self.find_all(**criteria)
		return found[0] if found else None


def _texts(event: dict) -> str:
	return "\n".join({payload.message(event), payload.title(event)})


@contextlib.contextmanager
def capture_sentry(config: dict[str, dict[str, typing.Any]] | str | None = None) -> typing.Iterator[SentryCapture]:
	"""
	Capture what every SentryService created inside the block would send; restore all global state after.

	Args:
		config: configuration applied to `asab.Config` first (``{"section": {"option": value}}`` or INI text).
	"""
	state = _GlobalState.save()
	capture = SentryCapture()
	try:
		_sdk.reset()
		for name in ENVIRONMENT_VARIABLES:
			os.environ.pop(name, None)
		# asab.Application parses sys.argv when created without args: give it the test runner's name only.
		sys.argv[:] = sys.argv[:1]
		if config is not None:
			capture.configure(config)
		service._transport_override.append(capture.Transport)
		yield capture
	finally:
		if capture.Transport in service._transport_override:
			service._transport_override.remove(capture.Transport)
		state.restore()


class _GlobalState:
	"""Everything a SentryService or an asab Application changes in the process, to put back afterwards."""

	def __init__(self) -> None:
		self.Environ: dict[str, str] = {}
		self.Config: typing.Any = None
		self.ConfigDefaults: typing.Any = None
		self.Singletons: dict = {}
		self.RootHandlers: list[logging.Handler] = []
		self.RootLevel = logging.NOTSET
		self.Argv: list[str] = []

	@classmethod
	def save(cls) -> _GlobalState:
		import asab
		import asab.abc.singleton
		import asab.config

		state = cls()
		state.Environ = dict(os.environ)
		state.Argv = list(sys.argv)
		state.Config = copy.deepcopy(asab.Config._sections)  # type: ignore[attr-defined]
		state.ConfigDefaults = copy.deepcopy(asab.config.ConfigParser._default_values)
		state.Singletons = dict(asab.abc.singleton.Singleton._instances)
		root = logging.getLogger()
		state.RootHandlers = list(root.handlers)
		state.RootLevel = root.level
		return state

	def restore(self) -> None:
		import asab
		import asab.abc.singleton
		import asab.config

		instances = asab.abc.singleton.Singleton._instances
		for cls_, instance in list(instances.items()):
			if self.Singletons.get(cls_) is instance:
				continue
			loop = getattr(instance, "Loop", None)
			if loop is not None:
				tasks.uninstall(loop)
				if not loop.is_closed() and not loop.is_running():
					_drain_loop(loop)
			del instances[cls_]
		_sdk.reset()
		sentry_logging.uninstall_handlers()
		levels.restore()
		notices.reset()
		scrub.configure()
		limits.uninstall()
		web.uninstall()

		root = logging.getLogger()
		for handler in list(root.handlers):
			if handler not in self.RootHandlers:
				root.removeHandler(handler)
		for handler in self.RootHandlers:
			if handler not in root.handlers:
				root.addHandler(handler)
		root.setLevel(self.RootLevel)

		asab.Config.clear()
		asab.Config._sections = self.Config  # type: ignore[attr-defined]
		asab.config.ConfigParser._default_values = self.ConfigDefaults  # type: ignore[misc]

		# asyncio.run() leaves the main thread without an event loop; asab.Application needs one.
		with warnings.catch_warnings():
			warnings.simplefilter("ignore", DeprecationWarning)
			try:
				current = asyncio.get_event_loop_policy().get_event_loop()
			except RuntimeError:
				current = None
			if current is None or current.is_closed():
				asyncio.set_event_loop(asyncio.new_event_loop())

		sys.argv[:] = self.Argv

		for name in set(os.environ) - set(self.Environ):
			del os.environ[name]
		for name, value in self.Environ.items():
			if os.environ.get(name) != value:
				os.environ[name] = value


def _drain_loop(loop: asyncio.AbstractEventLoop) -> None:
	"""
	Finish what an application left on a loop that did not run to its end (e.g. start-up failed), so that
	nothing of it surfaces later in another test. The loop itself stays open: it may belong to the test runner
	(pytest-asyncio).
	"""
	import gc
	import signal

	for signal_number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
		with contextlib.suppress(Exception):
			loop.remove_signal_handler(signal_number)
	with contextlib.suppress(Exception):
		pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
		for task in pending:
			task.cancel()
		if pending:
			loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
	gc.collect()


try:
	import pytest
except ImportError:  # pragma: no cover - the plugin is only loaded by pytest
	pytest = None  # type: ignore[assignment]

if pytest is not None:

	@pytest.fixture
	def sentry_capture(request: typing.Any) -> typing.Iterator[SentryCapture]:
		"""
		A `SentryCapture` active for the test. Configure it with ``sentry_capture.configure({...})`` or the
		marker ``@pytest.mark.sentry_config({...})`` (or INI text). The test fails if sentry-sdk swallowed an
		internal error while it ran.
		"""
		marker = request.node.get_closest_marker("sentry_config")
		config = marker.args[0] if marker is not None and marker.args else None
		recorder = _sdk.InternalErrorRecorder()
		recorder.install()
		try:
			with capture_sentry(config) as capture:
				yield capture
		finally:
			recorder.uninstall()
		if recorder.Records:
			pytest.fail(
				"sentry-sdk swallowed internal errors:\n"
				+ "\n".join(logging.Formatter().format(record) for record in recorder.Records),
				pytrace=False,
			)


def pytest_configure(config: typing.Any) -> None:
	config.addinivalue_line("markers", "sentry_config(config): configuration for the sentry_capture fixture")
