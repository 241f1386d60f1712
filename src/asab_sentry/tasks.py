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
import sentry_sdk.utils

from . import logging as sentry_logging


class LoopHooks:
	"""The exception handler and task factory installed on one event loop."""

	def __init__(self, loop: asyncio.AbstractEventLoop, events_level: typing.Callable[[], int | None] = lambda: 40):
		self.Loop = loop
		self.EventsLevel = events_level
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
		if self.Loop.get_exception_handler() == self.exception_handler:
			self.Loop.set_exception_handler(self.PreviousHandler)
		if self.Loop.get_task_factory() == self.task_factory:
			self.Loop.set_task_factory(self.PreviousFactory)
		if getattr(self.Loop, "_asab_sentry_hooks", None) is self:
			del self.Loop._asab_sentry_hooks  # type: ignore[attr-defined]

	def task_factory(self, loop: asyncio.AbstractEventLoop, coro: typing.Any, **kwargs: typing.Any) -> asyncio.Future:
		create = self.PreviousFactory
		if "context" in kwargs and kwargs["context"] is not None:
			# The caller chose the task's context; respect it.
			return create(loop, coro, **kwargs) if create is not None else asyncio.Task(coro, loop=loop, **kwargs)
		try:
			forking = sentry_sdk.isolation_scope()
			scope = forking.__enter__()
		except Exception:  # never fail the application's create_task() because of Sentry
			sentry_sdk.utils.capture_internal_exception(sys.exc_info())
			return create(loop, coro, **kwargs) if create is not None else asyncio.Task(coro, loop=loop, **kwargs)
		try:
			# The new task copies the current context, i.e. the freshly forked scopes.
			task = create(loop, coro, **kwargs) if create is not None else asyncio.Task(coro, loop=loop, **kwargs)
		finally:
			forking.__exit__(None, None, None)
		self.TaskScopes[task] = scope
		return task

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
			token = sentry_logging.suppressed.set(True)
			try:
				self._previous(loop, context)
			finally:
				sentry_logging.suppressed.reset(token)
		else:
			# e.g. "Task was destroyed but it is pending!": report the stable message only (the log line
			# carries object reprs with memory addresses, which would make every occurrence its own issue).
			token = sentry_logging.suppressed.set(True)
			try:
				self._previous(loop, dict(context))
			finally:
				sentry_logging.suppressed.reset(token)
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
			scope = self.TaskScopes.get(task)
			if scope is not None:
				with sentry_sdk.scope.use_isolation_scope(scope):
					capture()
				return
		capture()


def install(loop: asyncio.AbstractEventLoop, events_level: typing.Callable[[], int | None]) -> LoopHooks:
	"""
	Install the hooks on ``loop`` (replacing ones this package installed before) and return them.

	``events_level`` tells the current ``[sentry:logging] events`` level: loop errors that carry no
	exception are reported as events only when it is ERROR or lower.
	"""
	uninstall(loop)
	hooks = LoopHooks(loop, events_level)
	hooks.install()
	return hooks


def uninstall(loop: asyncio.AbstractEventLoop) -> None:
	"""Restore the exception handler and task factory that ``loop`` had before `install()`."""
	hooks = getattr(loop, "_asab_sentry_hooks", None)
	if hooks is not None:
		hooks.uninstall()
