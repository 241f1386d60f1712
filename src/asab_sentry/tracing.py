"""
Performance monitoring: `Measure`, the object behind ``SentryService.transaction()`` and ``span()``.

One object works four ways::

	with svc.transaction("task", "nightly import"): ...
	async with svc.span("db", "load rows"): ...

	@svc.transaction("task", "nightly import")
	def run(): ...

	@svc.span("db", "load rows")
	async def load(): ...

An exception inside marks the transaction or span ``internal_error`` and propagates unchanged.
A span started outside any transaction does nothing.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import typing

import sentry_sdk
import sentry_sdk.tracing

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
		self.Op = op
		self.Name = name

	def _start(self) -> sentry_sdk.tracing.Span | None:
		if self.Kind == "transaction":
			return sentry_sdk.start_transaction(op=self.Op, name=self.Name)
		if sentry_sdk.get_current_span() is None:
			return None
		return sentry_sdk.start_span(op=self.Op, name=self.Name)

	def __enter__(self) -> sentry_sdk.tracing.Span | None:
		span = self._start()
		if span is not None:
			span.__enter__()
		_open.set(_open.get() + ((self, span),))
		return span

	def __exit__(self, exc_type, exc_value, traceback) -> None:
		stack = _open.get()
		# The innermost block of this Measure; blocks of one task close innermost first, so it is normally last.
		for index in range(len(stack) - 1, -1, -1):
			if stack[index][0] is self:
				break
		else:
			return
		span = stack[index][1]
		_open.set(stack[:index] + stack[index + 1 :])
		if span is not None:
			if exc_value is not None and isinstance(exc_value, Exception) and span.status in (None, "ok"):
				# Older sentry-sdk 2.x marks only spans, not transactions; this package guarantees both.
				span.set_status("internal_error")
			span.__exit__(exc_type, exc_value, traceback)

	async def __aenter__(self) -> sentry_sdk.tracing.Span | None:
		return self.__enter__()

	async def __aexit__(self, exc_type, exc_value, traceback) -> None:
		self.__exit__(exc_type, exc_value, traceback)

	def __call__(self, function: F) -> F:
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

	def __repr__(self) -> str:
		return "<{} {} op={!r} name={!r}>".format(type(self).__name__, self.Kind, self.Op, self.Name)
