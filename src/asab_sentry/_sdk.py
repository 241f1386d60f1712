"""
The only module that touches sentry-sdk internals (private names). Each use is pinned by a test in
``tests/test_sdk_internals.py`` so that a sentry-sdk upgrade that changes them fails loudly.
"""

from __future__ import annotations

import logging
import typing

import sentry_sdk
import sentry_sdk.scope
import sentry_sdk.utils


def reset() -> None:
	"""
	Return sentry-sdk to its never-initialized state: close the client, drop the global scope and the
	current thread's isolation and current scopes. For tests and for the testing kit's teardown.
	"""
	client = sentry_sdk.get_client()
	if client.is_active():
		client.close(timeout=2.0)
	sentry_sdk.scope._global_scope = None  # type: ignore[attr-defined]
	sentry_sdk.scope._isolation_scope.set(None)  # type: ignore[attr-defined]
	sentry_sdk.scope._current_scope.set(None)  # type: ignore[attr-defined]


class InternalErrorRecorder(logging.Filter):
	"""
	Records the errors sentry-sdk swallows (``Internal error in sentry_sdk`` and friends).

	sentry-sdk logs them on its ``sentry_sdk.errors`` logger, behind a filter that drops them unless
	``debug`` is on; this filter is put in front of it so it sees every record, and passes them on.
	"""

	def __init__(self) -> None:
		super().__init__()
		self.Records: list[logging.LogRecord] = []

	def filter(self, record: logging.LogRecord) -> bool:
		if record.levelno >= logging.ERROR:
			self.Records.append(record)
		return True

	def install(self) -> None:
		sentry_sdk.utils.logger.filters.insert(0, self)

	def uninstall(self) -> None:
		if self in sentry_sdk.utils.logger.filters:
			sentry_sdk.utils.logger.removeFilter(self)


def quiet_debug_logger(debug: bool) -> None:
	"""
	sentry-sdk's internal logger sits at DEBUG behind a filter that drops the records unless ``debug`` is on:
	every internal debug call still builds a log record (about 10 µs each, several per transaction). Without
	``debug`` its level is raised to WARNING, so those calls cost nothing; errors still pass.
	"""
	sentry_sdk.utils.logger.setLevel(logging.DEBUG if debug else logging.WARNING)


def finished_child_spans(transaction: typing.Any) -> list:
	"""The finished spans recorded under ``transaction`` (sentry-sdk keeps them in a private recorder)."""
	recorder = getattr(transaction, "_span_recorder", None)
	if recorder is None:
		return []
	return [span for span in recorder.spans if span is not transaction and span.timestamp is not None]


def scope_data() -> tuple[dict, dict | None, dict]:
	"""
	Tags, user and contexts of the global, isolation and current scopes merged (later wins), as sentry-sdk
	would apply them to an event.
	"""
	tags: dict = {}
	user: dict | None = None
	contexts: dict = {}
	for scope in (sentry_sdk.get_global_scope(), sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()):
		tags.update(scope._tags)  # type: ignore[attr-defined]
		if scope._user:  # type: ignore[attr-defined]
			user = dict(scope._user)  # type: ignore[attr-defined]
		contexts.update(scope._contexts)  # type: ignore[attr-defined]
	return tags, user, contexts


class own_isolation_scope:
	"""
	Run a block in a fork of the isolation scope only (`sentry_sdk.isolation_scope()` forks the current scope
	too: twice the copying, on every web request). Tags, user, contexts and breadcrumbs set in the block stay
	in it. Not for blocks that set a span: that lives in the current scope.
	"""

	__slots__ = ("_token",)

	def __enter__(self) -> None:
		self._token = sentry_sdk.scope._isolation_scope.set(sentry_sdk.get_isolation_scope().fork())  # type: ignore[attr-defined]

	def __exit__(self, *exc_info: typing.Any) -> None:
		sentry_sdk.scope._isolation_scope.reset(self._token)  # type: ignore[attr-defined]
