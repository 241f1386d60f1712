"""
ASAB-aware logging capture: records at or above ``[sentry:logging] events`` become Sentry events,
records at or above ``breadcrumbs`` become breadcrumbs.

Unlike sentry-sdk's LoggingIntegration (which this package switches off), it maps ASAB's NOTICE (25)
to the valid Sentry level ``info``, sends ASAB ``struct_data`` (event extra, breadcrumb data) and leaves
out formatter artefacts such as ``asctime``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import threading
import typing
from sys import getrefcount

import sentry_sdk
import sentry_sdk.utils

from . import _sdk, capture, limits, notices, speed
from .breadcrumbs import _ALONE, _REUSE, LogBreadcrumb

L = logging.getLogger(__name__)

#: Set while a record is logged that this package has already reported in a structured way
#: (e.g. asab's loop exception handler logging an exception we captured), so it is not captured twice.
#: Set it with `suppressing`, which keeps `_suppressing` in step (the log handler's shortcut reads the variable only
#: while some thread suppresses).
suppressed: contextvars.ContextVar[bool] = contextvars.ContextVar("asab_sentry_suppressed", default=False)
_suppressing = 0
_suppressing_lock = threading.Lock()


@contextlib.contextmanager
def suppressing() -> typing.Iterator[None]:
	"""Within it, records of this thread (and task) are not reported: see `suppressed`."""
	global _suppressing
	with _suppressing_lock:
		_suppressing += 1
	token = suppressed.set(True)
	try:
		yield
	finally:
		suppressed.reset(token)
		with _suppressing_lock:
			_suppressing -= 1


#: A record with this attribute set (``extra={NO_EVENT: True}``) never becomes an event.
NO_EVENT = "asab_sentry_no_event"

# Attributes every LogRecord has, plus what formatters add; everything else on a record is user data.
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {
	"asctime",
	"message",
	"struct_data",
	"taskName",
	NO_EVENT,
}

#: Log-call arguments whose text cannot change after the call (exact types: a subclass may format differently later).
_PLAIN_ARGUMENTS = frozenset((str, int, float, bool, type(None)))

_LogRecord = logging.LogRecord

_IGNORED_LOGGERS = ("sentry_sdk", "urllib3.connectionpool")

#: asab.web's access log: one record per request, turned into a readable breadcrumb.
ACCESS_LOG = "asab.web.al"


def sentry_level(levelno: int) -> str:
	"""
	Map a logging level number to a valid Sentry level.

	>>> [sentry_level(n) for n in (10, 20, 25, 30, 40, 50)]
	['debug', 'info', 'info', 'warning', 'error', 'fatal']
	"""
	if levelno >= logging.CRITICAL:
		return "fatal"
	if levelno >= logging.ERROR:
		return "error"
	if levelno >= logging.WARNING:
		return "warning"
	if levelno >= logging.INFO:
		return "info"
	return "debug"


def record_data(record: logging.LogRecord) -> dict:
	"""ASAB struct_data plus any ``extra=`` attributes of the record, without logging's own attributes."""
	data = {}
	for key, value in record.__dict__.items():
		if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
			data[key] = value
	struct_data = getattr(record, "_struct_data", None)
	if isinstance(struct_data, dict):
		data.update(struct_data)
	return data


def formatted_message(record: logging.LogRecord, report: bool = True) -> str:
	"""
	The record's message as logging formats it; when that fails (``L.error("%s %s", 1)``, a message object
	whose ``str()`` raises), the unformatted template, and one line on the ``asab_sentry`` logger saying so.
	"""
	try:
		return record.getMessage()
	except Exception as e:
		if report:
			notices.say(
				"log format " + notices.safe_repr(record.name, 60),
				"A log record of logger {} could not be formatted ({}: {}); sent with its unformatted message.".format(
					notices.safe_repr(record.name, 60), type(e).__name__, notices.safe_str(e)
				),
				logging.WARNING,
				L,
			)
		return record.msg if type(record.msg) is str else notices.safe_str(record.msg)


def breadcrumb_from_record(record: logging.LogRecord, message: str) -> dict:
	"""The breadcrumb of a log record (``message`` is ``record.getMessage()``)."""
	return {
		"type": "log",
		"level": sentry_level(record.levelno),
		"category": record.name,
		"message": message,
		"timestamp": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc),
		"data": _breadcrumb_data(record),
	}


def _breadcrumb_data(record: logging.LogRecord) -> dict:
	# A breadcrumb stays in memory for the next max_breadcrumbs records: an empty ``{}`` is not tracked by the
	# garbage collector (a `limits.Bag` always is), and renders the same. (Where a before_breadcrumb callback may
	# fill it, `SentryLogHandler._breadcrumb` makes it a Bag.)
	data = record_data(record)
	return limits.Bag(data) if data else {}


def access_log_breadcrumb(record: logging.LogRecord, message: str) -> dict:
	"""The breadcrumb of an asab.web access-log record: ``GET /users/7 → 200 in 12 ms`` (see `asab_sentry.web`)."""
	from .web import access_log_crumb

	crumb = access_log_crumb(record)
	if crumb is None:
		return breadcrumb_from_record(record, message)
	crumb["timestamp"] = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
	return crumb


class SentryLogHandler(logging.Handler):
	"""
	A `logging.Handler` that turns records into Sentry events and breadcrumbs.

	Installed on the root logger by `SentryService`. It sees only the records that the loggers let
	through: with ASAB's default root level NOTICE, INFO breadcrumbs need ``-v`` or a lower
	``[logging] level``.
	"""

	def __init__(self, breadcrumbs_level: int | None, events_level: int | None):
		levels = [lvl for lvl in (breadcrumbs_level, events_level) if lvl is not None]
		self._ready = False  # (the attributes the shortcut depends on are being set)
		super().__init__(level=min(levels) if levels else logging.CRITICAL + 1)
		self._breadcrumbs_level = breadcrumbs_level
		self._events_level = events_level
		#: Set by the asab.web instrumentation: True for a record whose exception it reports (or not) itself.
		self.Claims: typing.Callable[[logging.LogRecord], bool] | None = None
		#: Set by the asab.web instrumentation: a match (truthy) for a path of ``[sentry:web] ignore_paths``.
		self.IgnoredPath: typing.Callable[[str], typing.Any] | None = None
		self._enabled = bool(levels)
		# Breadcrumbs are kept as records (`LogBreadcrumb`) unless a before_breadcrumb callback must see each
		# dict as it is added.
		options = sentry_sdk.get_client().options
		self._lazy = speed.ENABLED and options.get("before_breadcrumb") is None
		# sentry-sdk's own rule (``Scope.add_breadcrumb``): 0 keeps none, unset keeps 100.
		max_breadcrumbs = options.get("max_breadcrumbs")
		self._max_breadcrumbs = 100 if max_breadcrumbs is None else int(max_breadcrumbs)
		#: Per logger name: the breadcrumb builder of its records, or None (sentry-sdk's own loggers: never kept).
		self._builders: dict[typing.Any, typing.Callable[[logging.LogRecord, str], dict] | None] = {}
		self._ready = True
		self._shortcut()

	# The levels and the lazy mode decide the shortcut's bounds: kept in step when they change.

	@property
	def BreadcrumbsLevel(self) -> int | None:
		"""Records at or above this level (and below `EventsLevel`) become breadcrumbs; None: none do."""
		return self._breadcrumbs_level

	@BreadcrumbsLevel.setter
	def BreadcrumbsLevel(self, value: int | None) -> None:
		self._breadcrumbs_level = value
		self._shortcut()

	@property
	def EventsLevel(self) -> int | None:
		"""Records at or above this level become events; None: none do."""
		return self._events_level

	@EventsLevel.setter
	def EventsLevel(self, value: int | None) -> None:
		self._events_level = value
		self._shortcut()

	@property
	def LazyBreadcrumbs(self) -> bool:
		"""True: breadcrumbs are kept as their records (`LogBreadcrumb`), built when an event reads them."""
		return self._lazy

	@LazyBreadcrumbs.setter
	def LazyBreadcrumbs(self, value: bool) -> None:
		self._lazy = value
		self._shortcut()

	def setLevel(self, level: int | str) -> None:
		super().setLevel(level)
		self._shortcut()

	def _shortcut(self) -> None:
		# Levels in [_low, _high) take the shortcut in `handle`; an empty range when there is none.
		if not getattr(self, "_ready", False):
			return
		low = high = 0
		if self._lazy and self._enabled and self._breadcrumbs_level is not None:
			low = max(self._breadcrumbs_level, self.level)
			high = self._events_level if self._events_level is not None else 1 << 62
		self._low, self._high = low, max(low, high)

	def _builder_of(self, name: typing.Any) -> typing.Callable[[logging.LogRecord, str], dict] | None:
		# (Called when `_builders` has no entry for the name yet.)
		if name.startswith(_IGNORED_LOGGERS):
			builder = None
		else:
			# asab's access log (one record per web request, empty message): a readable breadcrumb instead.
			builder = access_log_breadcrumb if name == ACCESS_LOG else breadcrumb_from_record
		if len(self._builders) < 10000:  # logger names are few; a service making them per request is not
			self._builders[name] = builder
		return builder

	def handle(self, record: logging.LogRecord) -> bool:
		try:
			# No lock: sentry-sdk's capture and breadcrumb functions are thread-safe.
			levelno = record.levelno
			if (
				self._low <= levelno < self._high
				and record.exc_info is None
				and type(record.msg) is str
				and type(record) is _LogRecord
				and not self.filters
			):
				# A breadcrumb and nothing else (most records, asab's access log of every web request too): the
				# shortest path, what `emit` would do, with `_sdk.append_breadcrumb` inlined. (Only logging's own
				# record class: a record factory's may format its message its own way, from state that changes.
				# The filters are looked at here, not in the bounds: code may change the list without addFilter.)
				builder = self._builders.get(record.name, False)
				if builder is False:
					builder = self._builder_of(record.name)
				if builder is None or (_suppressing and suppressed.get()):
					return True
				try:
					# The message: formatted when the breadcrumb is first read if the arguments are plain values
					# (the text cannot differ then), now otherwise (a list logged and then changed).
					args = record.args
					message = record.msg if not args else None
					if args:
						if type(args) is tuple:
							for arg in args:
								if type(arg) not in _PLAIN_ARGUMENTS:
									message = formatted_message(record, report=False)
									break
						else:
							message = formatted_message(record, report=False)
					if builder is access_log_breadcrumb and self._service_wide(record):
						# The service's record of a request, written once the request's own scope has ended: a
						# breadcrumb of the whole service (see `_breadcrumb`).
						scope = sentry_sdk.scope._global_scope or sentry_sdk.get_global_scope()
					else:
						scope = _sdk._ISOLATION_SCOPE.get() or sentry_sdk.Scope.get_isolation_scope()
					crumbs = scope._breadcrumbs
					if len(crumbs) != self._max_breadcrumbs or not crumbs:
						crumbs.append(LogBreadcrumb(record, message, builder))
						while len(crumbs) > self._max_breadcrumbs:
							crumbs.popleft()
							scope._n_breadcrumbs_truncated += 1
					else:
						# Full (the steady state): the oldest goes, as sentry-sdk's ``Scope.add_breadcrumb`` does; when
						# nothing else holds it (no event, no forked scope, no user), it is reused for this record
						# instead of a new one (an allocation and a deallocation, a fifth of what a record costs here).
						oldest = crumbs.popleft()
						scope._n_breadcrumbs_truncated += 1
						if type(oldest) is LogBreadcrumb and _REUSE and getrefcount(oldest) == _ALONE:
							if oldest._record is not None:  # never built (events are rare): nothing to undo
								oldest._record = record
								oldest._message = message
								oldest._builder = builder
							else:
								oldest.reuse(record, message, builder)
							crumbs.append(oldest)
						else:
							crumbs.append(LogBreadcrumb(record, message, builder))
				except Exception as e:
					notices.say(
						"log record",
						"A log record of logger {} was not kept as a breadcrumb: {}: {}".format(
							notices.safe_repr(record.name, 60), type(e).__name__, notices.safe_str(e)
						),
						logging.ERROR,
						L,
					)
				return True
			if not self._enabled or levelno < self.level:
				return False
			if self.filters and not self.filter(record):
				return False
			self.emit(record)
			return True
		except Exception as e:  # a record of an odd shape (a non-str name, a non-int level) never raises into the app
			notices.say(
				"log record shape",
				"A log record could not be handled by Sentry's log handler: {}: {}".format(
					type(e).__name__, notices.safe_str(e)
				),
			)
			return False

	def emit(self, record: logging.LogRecord) -> None:
		if record.name.startswith(_IGNORED_LOGGERS) or suppressed.get():
			return
		try:
			# Asked at every level: a WARNING of asab's JSON middleware can become an error event of the request.
			claimed = (
				self.Claims is not None
				and (record.exc_info is not None or isinstance(record.msg, BaseException))
				and self.Claims(record)
			)
			if (
				self.EventsLevel is not None
				and record.levelno >= self.EventsLevel
				and not getattr(record, NO_EVENT, False)
				and not claimed
			):
				self._capture(record)
			if self.BreadcrumbsLevel is not None and record.levelno >= self.BreadcrumbsLevel:
				self._breadcrumb(record)
		except Exception as e:
			# Never raise into the application's logging call; never lose silently either.
			notices.say(
				"log record",
				"A log record of logger {} was not sent to Sentry: {}: {}".format(
					notices.safe_repr(record.name, 60), type(e).__name__, notices.safe_str(e)
				),
				logging.ERROR,
				L,
			)

	def _capture(self, record: logging.LogRecord) -> None:
		client = sentry_sdk.get_client()
		hint: dict = {"log_record": record}
		if record.exc_info and record.exc_info[0] is not None:
			event, hint = sentry_sdk.utils.event_from_exception(
				record.exc_info,
				client_options=client.options,
				mechanism={"type": "logging", "handled": True},
			)
			hint["log_record"] = record
		else:
			event = {}
			if record.stack_info or record.exc_info:
				# stack_info=True, or L.exception() outside an except block: the stack of the logging call.
				stack = capture.current_stack()
				if stack is not None:
					event["threads"] = {"values": [{"stacktrace": stack, "crashed": False, "current": True}]}

		message = record.msg if type(record.msg) is str else notices.safe_str(record.msg)
		params = record.args
		event["level"] = sentry_level(record.levelno)
		event["logger"] = record.name
		if message or not event.get("exception"):
			event["logentry"] = {
				"message": message,
				"params": list(params) if isinstance(params, tuple) else (params or []),
				"formatted": formatted_message(record),
			}
		extra = record_data(record)
		if extra:
			event["extra"] = limits.Bag(extra)
		if speed.ENABLED:
			event["event_id"] = capture.new_event_id()
		sentry_sdk.capture_event(event, hint=hint)

	def _service_wide(self, record: logging.LogRecord) -> bool:
		# An access-log record goes to the global scope unless its request's path is ignored (asab's own API, health
		# checks: requests passed through untouched, often many, which would fill every event's breadcrumbs); that one
		# stays in the scope it is written in, the connection's, as any other record.
		ignored = self.IgnoredPath
		if ignored is None:
			return True
		data = getattr(record, "_struct_data", None)
		path = data.get("al.p") if type(data) is dict else None
		return type(path) is not str or not ignored(path)

	def _breadcrumb(self, record: logging.LogRecord) -> None:
		message = formatted_message(record, report=False)
		# asab's access log (one record per web request, empty message): a readable breadcrumb instead. It is the
		# service's record of a request, written after the request's own scope ended (in the connection's): it goes
		# to sentry-sdk's global scope, which every later event of the service merges (a request's, a background
		# task's). Kept in the connection's isolation scope, every request would copy them all when its own scope
		# is forked (up to max_breadcrumbs per request; docs/web.md says what that cost). Ignored paths: `_service_wide`.
		access_log = record.name == ACCESS_LOG
		builder = access_log_breadcrumb if access_log else breadcrumb_from_record
		access_log = access_log and self._service_wide(record)
		if self._lazy:
			_sdk.append_breadcrumb(
				LogBreadcrumb(record, message, builder), self._max_breadcrumbs, global_scope=access_log
			)
		else:
			crumb = builder(record, message)
			if type(crumb.get("data")) is dict and not crumb["data"]:
				# The before_breadcrumb callback sees a `limits.Bag`: keys it adds are all kept, as a record's own.
				crumb["data"] = limits.Bag()
			if access_log:
				sentry_sdk.get_global_scope().add_breadcrumb(crumb, hint={"log_record": record})
			else:
				sentry_sdk.add_breadcrumb(crumb, hint={"log_record": record})


def install_handler(handler: SentryLogHandler) -> None:
	"""Put the handler on the root logger, replacing one installed earlier."""
	uninstall_handlers()
	logging.getLogger().addHandler(handler)


def uninstall_handlers() -> None:
	"""Remove every `SentryLogHandler` from the root logger."""
	root = logging.getLogger()
	for existing in list(root.handlers):
		if isinstance(existing, SentryLogHandler):
			root.removeHandler(existing)
