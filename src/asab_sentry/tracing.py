"""
Performance monitoring: `Measure`, the object behind ``SentryService.transaction()`` and ``span()``.

One object works four ways::

	with svc.transaction("task", "nightly import"): ...
	async with svc.span("db", "load rows"): ...

	@svc.transaction("task", "nightly import")
	def run(): ...

	@svc.span("db", "load rows")
	async def load(): ...

A decorated generator or async generator is measured from its first item to its end (exhaustion, ``close()``
or ``aclose()``), not only while it is created; ``send()``/``asend()`` and ``throw()``/``athrow()`` reach it.

An exception inside marks the transaction or span ``internal_error`` (``cancelled`` for
`asyncio.CancelledError`) and propagates unchanged. A span started outside any transaction does nothing.
Nothing here raises into the application: an op or name that is not a string is converted (an `enum.Enum`
member to its value), a failure of sentry-sdk is reported by one line on the ``asab_sentry`` logger.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import inspect
import logging
import threading
import typing

import sentry_sdk
import sentry_sdk.tracing

from . import notices

L = logging.getLogger(__name__)

F = typing.TypeVar("F", bound=typing.Callable[..., typing.Any])

# The open transactions and spans of the running task or thread, innermost last, as (Measure, span) pairs.
# One variable for the whole module: a ContextVar per Measure would be kept by every context that ever set
# it, so a long-lived task creating Measures (``svc.transaction(...)`` in a loop) would grow without bound.
_open: contextvars.ContextVar[tuple[tuple[typing.Any, typing.Any], ...]] = contextvars.ContextVar(
	"asab_sentry_measures", default=()
)


class Measure:
	"""
	A transaction or a span, as a (sync or async) context manager or a decorator.

	Each ``with`` block and each call of a decorated function starts its own transaction or span,
	so one `Measure` may be reused, nested and shared between tasks and threads.
	"""

	def __init__(self, kind: str, op: str, name: str):
		if kind not in ("transaction", "span"):
			raise ValueError("kind must be 'transaction' or 'span', not {!r}".format(kind))
		self.Kind = kind
		self.Op = text(op, "{}() op".format(kind))
		self.Name = text(name, "{}() name".format(kind))
		# Every span entered and not exited yet, whatever the task or thread: one entered in one thread and
		# exited in another is still finished.
		self._entered: list[sentry_sdk.tracing.Span | None] = []
		self._lock = threading.Lock()

	def _start(self) -> sentry_sdk.tracing.Span | None:
		if self.Kind == "transaction":
			return sentry_sdk.start_transaction(op=self.Op, name=self.Name)
		if sentry_sdk.get_current_span() is None:
			return None
		return sentry_sdk.start_span(op=self.Op, name=self.Name)

	def __enter__(self) -> sentry_sdk.tracing.Span | None:
		try:
			span = self._start()
			if span is not None:
				span.__enter__()
		except Exception as e:
			notices.say(
				"{} start".format(self.Kind),
				"{} {!r} not started: {}: {}".format(self.Kind, self.Name, type(e).__name__, notices.safe_str(e)),
				logging.ERROR,
				L,
			)
			span = None
		_open.set(_open.get() + ((self, span),))
		with self._lock:
			self._entered.append(span)
		return span

	def __exit__(self, exc_type, exc_value, traceback) -> None:
		try:
			self._exit(exc_type, exc_value, traceback)
		except Exception as e:
			notices.say(
				"{} finish".format(self.Kind),
				"{} {!r} not finished: {}: {}".format(self.Kind, self.Name, type(e).__name__, notices.safe_str(e)),
				logging.ERROR,
				L,
			)

	def _exit(self, exc_type, exc_value, traceback) -> None:
		stack = _open.get()
		# The innermost block of this Measure; blocks of one task close innermost first, so it is normally last.
		for index in range(len(stack) - 1, -1, -1):
			if stack[index][0] is self:
				break
		else:
			index = -1
		with self._lock:
			if index >= 0:
				span = stack[index][1]
				_open.set(stack[:index] + stack[index + 1 :])
				for i in range(len(self._entered) - 1, -1, -1):
					if self._entered[i] is span:
						del self._entered[i]
						break
			elif self._entered:
				# Entered in another task or thread (e.g. handed over to a worker thread): finish the latest.
				span = self._entered.pop()
			else:
				notices.say(
					"{} exit".format(self.Kind),
					"{} {!r} exited without being entered; ignored.".format(self.Kind, self.Name),
					logging.WARNING,
					L,
				)
				return
		if span is not None:
			if isinstance(exc_value, GeneratorExit):
				# A decorated generator closed before its end (close(), aclose(), a ``break``): a normal end.
				exc_type = exc_value = traceback = None
			if exc_value is not None and span.status in (None, "ok"):
				if isinstance(exc_value, asyncio.CancelledError):
					span.set_status("cancelled")
					# sentry-sdk would mark any exception internal_error; the status is all it takes from it.
					exc_type = exc_value = traceback = None
				elif isinstance(exc_value, Exception):
					# Older sentry-sdk 2.x marks only spans, not transactions; this package guarantees both.
					span.set_status("internal_error")
			span.__exit__(exc_type, exc_value, traceback)

	async def __aenter__(self) -> sentry_sdk.tracing.Span | None:
		return self.__enter__()

	async def __aexit__(self, exc_type, exc_value, traceback) -> None:
		self.__exit__(exc_type, exc_value, traceback)

	def __call__(self, function: F) -> F:
		if not callable(function):
			notices.say(
				"{} decorator".format(self.Kind),
				"@{}(...) applied to {}, which is not a function; left as it is.".format(
					self.Kind, notices.safe_repr(function)
				),
				logging.ERROR,
				L,
			)
			return function
		if inspect.isasyncgenfunction(function):
			return typing.cast(F, self._wrap_async_generator(function))
		if inspect.isgeneratorfunction(function):

			@functools.wraps(function)
			def measured_generator(*args, **kwargs):
				# From the first next() to exhaustion or close(): the work, not the creation of the generator.
				with Measure(self.Kind, self.Op, self.Name):
					return (yield from function(*args, **kwargs))

			return typing.cast(F, measured_generator)
		if inspect.iscoroutinefunction(function):

			@functools.wraps(function)
			async def measured_coroutine(*args, **kwargs):
				with Measure(self.Kind, self.Op, self.Name):
					return await function(*args, **kwargs)

			return typing.cast(F, measured_coroutine)

		@functools.wraps(function)
		def measured(*args, **kwargs):
			with Measure(self.Kind, self.Op, self.Name):
				return function(*args, **kwargs)

		return typing.cast(F, measured)

	def _wrap_async_generator(self, function: typing.Callable[..., typing.Any]) -> typing.Callable[..., typing.Any]:
		kind, op, name = self.Kind, self.Op, self.Name

		@functools.wraps(function)
		async def measured_async_generator(*args, **kwargs):
			# From the first __anext__() to exhaustion or aclose(), forwarding asend() and athrow() as
			# ``yield from`` does for a generator (there is no ``yield from`` for async generators).
			inner = function(*args, **kwargs)
			with Measure(kind, op, name):
				try:
					value = await inner.__anext__()
					while True:
						try:
							received = yield value
						except GeneratorExit:
							await inner.aclose()
							raise
						except BaseException as e:
							value = await inner.athrow(e)
						else:
							value = await (inner.__anext__() if received is None else inner.asend(received))
				except StopAsyncIteration:
					return

		return measured_async_generator

	def __repr__(self) -> str:
		return "<{} {} op={!r} name={!r}>".format(type(self).__name__, self.Kind, self.Op, self.Name)


def text(value: object, what: str) -> str:
	"""
	A transaction/span name or op as ``str``: an `enum.Enum` member gives its value (its name when the value is
	not a string), numbers their decimal form, anything else its ``str()`` with one line saying so. Never raises.

	>>> import enum
	>>> class Op(enum.Enum):
	...     DB = "db"
	>>> text(Op.DB, "op"), text(5, "op")
	('db', '5')
	"""
	if type(value) is str:
		return value
	if isinstance(value, enum.Enum):
		inner = value.value
		return str.__str__(inner) if isinstance(inner, str) else notices.safe_str(value.name)
	if isinstance(value, str):
		return str.__str__(value)
	if isinstance(value, (int, float)) and not isinstance(value, bool):
		return notices.safe_repr(value, 200)
	converted = notices.safe_str(value)
	notices.say(
		"name " + what,
		"{} should be a string, got {}; sent as {}.".format(what, type(value).__name__, notices.safe_repr(converted)),
		logging.WARNING,
		L,
	)
	return converted
