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
or ``aclose()``), not only while it is created; ``send()``/``asend()`` and ``throw()``/``athrow()`` reach it. Its
span is the current span only while the generator runs: between the items the consumer keeps its own.

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

# The open transactions and spans of the running task or thread, innermost last, as (Measure, span, state)
# triples (state: see `Measure._enter_span`). One variable for the whole module: a ContextVar per Measure would
# be kept by every context that ever set it, so a long-lived task creating Measures (``svc.transaction(...)``
# in a loop) would grow without bound.
_open: contextvars.ContextVar[tuple[tuple[typing.Any, typing.Any, typing.Any], ...]] = contextvars.ContextVar(
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
		# Every span entered and not exited yet (with its state), whatever the task or thread: one entered in
		# one thread and exited in another is still finished.
		self._entered: list[tuple[sentry_sdk.tracing.Span | None, typing.Any]] = []
		self._lock = threading.Lock()

	def _start(self) -> sentry_sdk.tracing.Span | None:
		if self.Kind == "transaction":
			return sentry_sdk.start_transaction(op=self.Op, name=self.Name)
		if sentry_sdk.get_current_span() is None:
			return None
		return sentry_sdk.start_span(op=self.Op, name=self.Name)

	def __enter__(self) -> sentry_sdk.tracing.Span | None:
		stack = _open.get()
		state = None
		try:
			span = self._start()
			if span is not None:
				state = self._enter_span(span, stack)
		except Exception as e:
			notices.say(
				"{} start".format(self.Kind),
				"{} {!r} not started: {}: {}".format(self.Kind, self.Name, type(e).__name__, notices.safe_str(e)),
				logging.ERROR,
				L,
			)
			span = None
		# Blocks finished elsewhere (a decorated async generator left by ``break`` is closed later by the event
		# loop in another task) would stay in this task's stack for ever: dropped once a few have gathered.
		if len(stack) >= _PRUNE_AT:
			stack = tuple(entry for entry in stack if not _finished(entry))
		_open.set(stack + ((self, span, state),))
		with self._lock:
			self._entered.append((span, state))
		return span

	@staticmethod
	def _enter_span(span: sentry_sdk.tracing.Span, stack: tuple) -> typing.Any:
		"""
		Enter ``span`` (it becomes the scope's current span) and return what its exit needs to restore:
		(scope, the spans current before it, nearest first). sentry-sdk's exit restores only the one before,
		even when that one has finished in the meantime: a generator closed after its transaction ended
		made the finished transaction current again, and every later span went into it, lost.
		"""
		scope = span.scope or sentry_sdk.get_current_scope()
		before = scope.span
		span.__enter__()
		if scope.span is not span:
			return None
		if before is None:
			return scope, (None,)
		for entry in reversed(stack):
			if entry[1] is before:
				return scope, (before, *entry[2][1]) if entry[2] is not None else (before,)
		return scope, (before,)

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
				span, state = stack[index][1], stack[index][2]
				_open.set(stack[:index] + stack[index + 1 :])
				for i in range(len(self._entered) - 1, -1, -1):
					if self._entered[i][0] is span:
						del self._entered[i]
						break
			elif self._entered:
				# Entered in another task or thread (e.g. handed over to a worker thread): finish the latest.
				span, state = self._entered.pop()
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
			if state is None:
				span.__exit__(exc_type, exc_value, traceback)
			else:
				scope, before = state
				current = scope.span
				span.__exit__(exc_type, exc_value, traceback)
				previous = before[0]
				if current is not span or (previous is not None and previous.timestamp is not None):
					scope.span = _current_after(span, current, before)

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
			return typing.cast(F, self._wrap_generator(function))
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

	def _wrap_generator(self, function: typing.Callable[..., typing.Any]) -> typing.Callable[..., typing.Any]:
		kind, op, name = self.Kind, self.Op, self.Name

		@functools.wraps(function)
		def measured_generator(*args, **kwargs):
			# From the first next() to exhaustion or close(): the work, not the creation of the generator. Each
			# step runs with the span current; the consumer, between the steps, has its own (see _Steps).
			inner = function(*args, **kwargs)
			steps = _Steps(Measure(kind, op, name))
			try:
				value = steps.run(inner.send, None)
				while True:
					try:
						received = yield value
					except GeneratorExit:
						steps.run(inner.close)
						raise
					except BaseException as e:
						value = steps.run(inner.throw, e)
					else:
						value = steps.run(inner.send, received)
			except StopIteration as stop:
				return stop.value

		return measured_generator

	def _wrap_async_generator(self, function: typing.Callable[..., typing.Any]) -> typing.Callable[..., typing.Any]:
		kind, op, name = self.Kind, self.Op, self.Name

		@functools.wraps(function)
		async def measured_async_generator(*args, **kwargs):
			# From the first __anext__() to exhaustion or aclose(), forwarding asend() and athrow() as
			# ``yield from`` does for a generator (there is no ``yield from`` for async generators).
			inner = function(*args, **kwargs)
			steps = _Steps(Measure(kind, op, name))
			try:
				value = await steps.arun(inner.__anext__)
				while True:
					try:
						received = yield value
					except GeneratorExit:
						await steps.arun(inner.aclose)
						raise
					except BaseException as e:
						value = await steps.arun(inner.athrow, e)
					else:
						if received is None:
							value = await steps.arun(inner.__anext__)
						else:
							value = await steps.arun(inner.asend, received)
			except StopAsyncIteration:
				return

		return measured_async_generator

	def __repr__(self) -> str:
		return "<{} {} op={!r} name={!r}>".format(type(self).__name__, self.Kind, self.Op, self.Name)


class _Steps:
	"""
	The steps of a decorated generator: its span is entered at the first step and finished at the last (its
	end, an exception out of it, or its close()), and is the current span only while a step runs. Between
	the steps the consumer runs with its own current span: its spans, and a transaction it started, do not
	go into the generator's span or transaction. (With ``with`` around ``yield from``, the suspended
	generator's span stayed current in the consumer.) A step may run in another task or thread than the first.
	"""

	__slots__ = ("Measure", "Inside", "Scope", "Started")

	def __init__(self, measure: Measure):
		self.Measure = measure
		self.Inside: typing.Any = None  # the current span the generator left at its last yield
		self.Scope: typing.Any = None
		self.Started = False

	def _begin(self) -> tuple[typing.Any, typing.Any]:
		scope = sentry_sdk.get_current_scope()
		saved = scope.span
		if not self.Started:
			self.Started = True
			self.Scope = scope
			self.Measure.__enter__()
		else:
			scope.span = self.Inside
		return scope, saved

	def _end(self, scope: typing.Any, error: BaseException | None) -> None:
		first = self.Scope if self.Scope is not scope else None
		kept = first.span if first is not None else None
		if error is None:
			self.Measure.__exit__(None, None, None)
		else:
			self.Measure.__exit__(type(error), error, error.__traceback__)
		if first is not None:
			first.span = kept  # the scope of the first step belongs to another task or thread by now

	def run(self, step: typing.Callable[..., typing.Any], *args: typing.Any) -> typing.Any:
		scope, saved = self._begin()
		try:
			result = step(*args)
		except StopIteration:
			self._end(scope, None)
			raise
		except BaseException as e:
			self._end(scope, e)
			raise
		else:
			if not args and getattr(step, "__name__", "") == "close":
				self._end(scope, None)
			return result
		finally:
			self.Inside = scope.span
			scope.span = saved

	async def arun(self, step: typing.Callable[..., typing.Any], *args: typing.Any) -> typing.Any:
		scope, saved = self._begin()
		try:
			result = await step(*args)
		except StopAsyncIteration:
			self._end(scope, None)
			raise
		except BaseException as e:
			self._end(scope, e)
			raise
		else:
			if getattr(step, "__name__", "") == "aclose":
				self._end(scope, None)
			return result
		finally:
			self.Inside = scope.span
			scope.span = saved


# Entries of `_open` are checked for blocks finished elsewhere once the stack is this deep.
_PRUNE_AT = 8


def _finished(entry: tuple) -> bool:
	"""Whether an entry of `_open` was exited elsewhere (its span finished, or its Measure holds no block)."""
	measure, span = entry[0], entry[1]
	return (span is not None and span.timestamp is not None) or not measure._entered


def _current_after(span: typing.Any, current: typing.Any, before: tuple) -> typing.Any:
	"""
	The scope's current span once ``span`` has finished: ``current`` (what was current just before) when it is
	another, unrelated span still open (a transaction started after ``span``'s own ended); otherwise the
	nearest of ``before`` (the spans current when ``span`` started, nearest first) that is still open, or
	none: a finished transaction never becomes current again.
	"""
	if (
		current is not None
		and current is not span
		and current.timestamp is None
		and current.containing_transaction is not span.containing_transaction
	):
		return current
	for candidate in before:
		if candidate is None or candidate.timestamp is None:
			return candidate
	return None


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
