"""
Uncaught errors in the asyncio event loop, reported exactly once as structured exceptions,
and one Sentry isolation scope per asyncio task.

- The loop's exception handler (which asab points at a function that pastes the traceback into a log
  message) is wrapped: an exception that reaches it — from a task nobody awaited, or from a callback —
  is captured with its frames (``mechanism: asyncio, handled: false``), then the previous handler logs
  it as before while the logging capture is suppressed, so the same error never becomes a second,
  ungroupable text event.
- A task factory forks the Sentry isolation scope for every new task, so a tag set inside one task does
  not show on events of concurrent tasks. Unlike sentry-sdk's AsyncioIntegration this works on a loop
  that is not running yet (services created in ``Application.__init__``) and does not report exceptions
  that the awaiting code catches.
- A task that ends with an exception nobody retrieves (``await``, ``result()``, ``exception()``, ``gather``)
  within `GRACE` seconds is reported then, while the service runs: also when the task object is still
  referenced (``self.Worker = asyncio.ensure_future(...)``) or sits in a reference cycle, where asyncio itself
  would report it only when the task is garbage-collected, if ever. asyncio's own later report is switched
  off for it, so it is reported once. Tasks still waiting at exit are checked when the service finalizes.
- Events of an exception that escaped a task (reported here, or logged by asab's TaskService or PubSub)
  carry the task as context ``asyncio_task``: its name and coroutine.
- Tasks created while a sampled transaction is running get a child span (op ``function``, the coroutine's
  name) from creation to end, unless ``[sentry] task_spans`` is false.

Threads are covered by sentry-sdk's ThreadingIntegration, ``main()`` by its ExcepthookIntegration.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import typing
import weakref

import sentry_sdk
import sentry_sdk.scope
import sentry_sdk.tracing
import sentry_sdk.utils

from . import logging as sentry_logging

#: Seconds a failed task's exception may stay unretrieved before it is reported as unhandled.
GRACE = 0.5

# The task an exception escaped from, as an attribute of the exception (exceptions take no weak references).
_TASK = "_asab_sentry_task"


def task_context(task: asyncio.Future) -> dict[str, str]:
	"""The ``asyncio_task`` context of an event: the task's name and its coroutine's qualified name."""
	context = {}
	get_name = getattr(task, "get_name", None)
	if get_name is not None:
		context["name"] = str(get_name())
	get_coro = getattr(task, "get_coro", None)
	coro = get_coro() if get_coro is not None else None
	if coro is not None:
		context["coroutine"] = str(getattr(coro, "__qualname__", type(coro).__name__))
	return context


def _add_task_context(event: dict, hint: dict) -> dict:
	exc_info = hint.get("exc_info") if hint else None
	exception = exc_info[1] if exc_info else None
	context = getattr(exception, _TASK, None)
	if context is not None:
		event.setdefault("contexts", {}).setdefault("asyncio_task", dict(context))
	return event


class LoopHooks:
	"""The exception handler and task factory installed on one event loop."""

	def __init__(
		self,
		loop: asyncio.AbstractEventLoop,
		events_level: typing.Callable[[], int | None] = lambda: 40,
		task_spans: bool = True,
	):
		self.Loop = loop
		self.EventsLevel = events_level
		self.TaskSpans = task_spans
		# Failed tasks waiting for their exception to be retrieved, each with when it gets reported.
		self.Unretrieved: dict[asyncio.Future, float] = {}
		#: Code objects of coroutines whose tasks are created as they are (no own scope, no checks): aiohttp's
		#: per-request task, whose scope the web middleware forks and whose result aiohttp itself awaits.
		self.PassThrough: set[typing.Any] = set()
		self._checking: asyncio.TimerHandle | None = None
		self.PreviousHandler = loop.get_exception_handler()
		self.PreviousFactory = loop.get_task_factory()
		# Each task's scope, for reporting its uncaught error with its tags. (Task.get_context() of Python 3.12+
		# cannot serve: the handler may already run inside that context, which then cannot be entered again.)
		self.TaskScopes: weakref.WeakKeyDictionary[asyncio.Future, sentry_sdk.Scope] = weakref.WeakKeyDictionary()

	def install(self) -> None:
		self.Loop.set_exception_handler(self.exception_handler)
		self.Loop.set_task_factory(self.task_factory)  # type: ignore[arg-type]
		self.Loop._asab_sentry_hooks = self  # type: ignore[attr-defined]

	def uninstall(self) -> None:
		if self._checking is not None:
			self._checking.cancel()
			self._checking = None
		if self.Loop.get_exception_handler() == self.exception_handler:
			self.Loop.set_exception_handler(self.PreviousHandler)
		if self.Loop.get_task_factory() == self.task_factory:
			self.Loop.set_task_factory(self.PreviousFactory)
		if getattr(self.Loop, "_asab_sentry_hooks", None) is self:
			del self.Loop._asab_sentry_hooks  # type: ignore[attr-defined]

	def task_factory(self, loop: asyncio.AbstractEventLoop, coro: typing.Any, **kwargs: typing.Any) -> asyncio.Future:
		create = self.PreviousFactory
		if getattr(coro, "cr_code", None) in self.PassThrough or (kwargs and kwargs.get("context") is not None):
			# The caller chose the task's context (respect it), or it is a task the web middleware looks after
			# (aiohttp's task per request: the shortest path).
			if create is not None:
				return create(loop, coro, **kwargs)
			return asyncio.Task(coro, loop=loop, **kwargs) if kwargs else asyncio.Task(coro, loop=loop)
		try:
			forking = sentry_sdk.isolation_scope()
			scope = forking.__enter__()
		except Exception:  # never fail the application's create_task() because of Sentry
			sentry_sdk.utils.capture_internal_exception(sys.exc_info())
			return create(loop, coro, **kwargs) if create is not None else asyncio.Task(coro, loop=loop, **kwargs)
		span = None
		try:
			if self.TaskSpans:
				parent = sentry_sdk.get_current_span()
				# Not for the event loop closing an abandoned async generator (its aclose() as a task, at whatever
				# moment the garbage collector found it): that is no work of the running transaction.
				if parent is not None and parent.sampled and type(coro).__name__ != "async_generator_athrow":
					span = parent.start_child(
						op="function", name=getattr(coro, "__qualname__", None) or type(coro).__name__
					)
					span.origin = "auto.function.asab_sentry"
					sentry_sdk.get_current_scope().span = span
			# The new task copies the current context, i.e. the freshly forked scopes.
			task = create(loop, coro, **kwargs) if create is not None else asyncio.Task(coro, loop=loop, **kwargs)
		finally:
			forking.__exit__(None, None, None)
		self.TaskScopes[task] = scope
		task.add_done_callback(self._task_done if span is None else self._span_task_done(span))
		return task

	def _span_task_done(self, span: sentry_sdk.tracing.Span) -> typing.Callable[[asyncio.Future], None]:
		def done(task: asyncio.Future) -> None:
			try:
				if task.cancelled():
					span.set_status("cancelled")
				elif task._exception is not None:  # type: ignore[attr-defined]  # not exception(): it marks it retrieved
					span.set_status("internal_error")
				else:
					span.set_status("ok")
				span.finish()
			except Exception:
				sentry_sdk.utils.capture_internal_exception(sys.exc_info())
			self._task_done(task)

		return done

	def _task_done(self, task: asyncio.Future) -> None:
		# Reading task._exception and _log_traceback does not mark the exception retrieved (exception() would).
		exception = None if task.cancelled() else getattr(task, "_exception", None)
		if exception is None or not getattr(task, "_log_traceback", False):
			return
		try:
			setattr(exception, _TASK, task_context(task))
		except Exception:
			pass
		self.Unretrieved[task] = self.Loop.time() + GRACE
		if self._checking is None:
			self._checking = self.Loop.call_later(GRACE, self.check_unretrieved)

	def check_unretrieved(self, everything: bool = False) -> None:
		"""
		Report the failed tasks whose exception nobody retrieved within `GRACE` seconds (``everything``:
		all of them, at exit).
		"""
		self._checking = None
		now = self.Loop.time()
		for task, deadline in list(self.Unretrieved.items()):
			if deadline > now and not everything:
				continue
			del self.Unretrieved[task]
			if not getattr(task, "_log_traceback", False):
				continue  # the awaiting code took it
			try:
				task._log_traceback = False  # type: ignore[attr-defined]  # asyncio's own report would come later
				self._capture(task._exception, task)  # type: ignore[attr-defined]
			except Exception:
				sentry_sdk.utils.capture_internal_exception(sys.exc_info())
		if self.Unretrieved and not self.Loop.is_closed():
			delay = max(0.0, min(self.Unretrieved.values()) - now)
			self._checking = self.Loop.call_later(delay, self.check_unretrieved)

	def exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
		context = dict(context)  # asab's handler pops keys from the dict it is given
		exception = context.get("exception")
		if isinstance(exception, BaseException) and not isinstance(exception, (KeyboardInterrupt, SystemExit)):
			try:
				self._capture(exception, context.get("future") or context.get("task"))
			except Exception:
				# Fall back to the log record (a text event) rather than lose the error.
				sentry_sdk.utils.capture_internal_exception(sys.exc_info())
				self._previous(loop, context)
				return
			with sentry_logging.suppressing():
				self._previous(loop, context)
		else:
			# e.g. "Task was destroyed but it is pending!": report the stable message only (the log line
			# carries object reprs with memory addresses, which would make every occurrence its own issue).
			with sentry_logging.suppressing():
				self._previous(loop, dict(context))
			level = self.EventsLevel()
			if level is not None and level <= logging.ERROR:
				sentry_sdk.capture_event(
					{
						"level": "error",
						"logger": "asyncio",
						"logentry": {"message": str(context.get("message") or "Unhandled event loop error")},
						"extra": {key: repr(value) for key, value in context.items() if key != "message"},
					}
				)

	def _previous(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
		if self.PreviousHandler is not None:
			self.PreviousHandler(loop, context)
		else:
			loop.default_exception_handler(context)

	def _capture(self, exception: BaseException, task: typing.Any) -> None:
		def capture() -> None:
			client = sentry_sdk.get_client()
			event, hint = sentry_sdk.utils.event_from_exception(
				exception,
				client_options=client.options,
				mechanism={"type": "asyncio", "handled": False},
			)
			sentry_sdk.capture_event(event, hint=hint)

		if isinstance(task, asyncio.Future):
			if getattr(exception, _TASK, None) is None:
				try:
					setattr(exception, _TASK, task_context(task))
				except Exception:
					pass
			scope = self.TaskScopes.get(task)
			if scope is not None:
				with sentry_sdk.scope.use_isolation_scope(scope):
					capture()
				return
		capture()


def install(
	loop: asyncio.AbstractEventLoop, events_level: typing.Callable[[], int | None], task_spans: bool = True
) -> LoopHooks:
	"""
	Install the hooks on ``loop`` (replacing ones this package installed before) and return them.

	``events_level`` tells the current ``[sentry:logging] events`` level: loop errors that carry no
	exception are reported as events only when it is ERROR or lower. ``task_spans``: spans for tasks created
	inside a sampled transaction.
	"""
	uninstall(loop)
	hooks = LoopHooks(loop, events_level, task_spans)
	hooks.install()
	if not _processor_added:
		sentry_sdk.scope.add_global_event_processor(_add_task_context)
		_processor_added.append(True)
	return hooks


_processor_added: list[bool] = []


def uninstall(loop: asyncio.AbstractEventLoop) -> None:
	"""Restore the exception handler and task factory that ``loop`` had before `install()`."""
	hooks = getattr(loop, "_asab_sentry_hooks", None)
	if hooks is not None:
		hooks.uninstall()
