"""
Faithful capture: what sentry-sdk's own integrations would send and this package must not lose.

- `expand_exception_groups`: sentry-sdk expands an `ExceptionGroup` only when it is the captured exception
  itself; one reached through ``__context__`` or ``__cause__`` (a TaskGroup whose children failed, then a
  ``finally`` that raised) loses its children. This event processor rebuilds the exception list of such an
  event as a tree with every child, using sentry-sdk's own exception builder.
- `current_stack`: the stack of the code that called a logging function, for ``stack_info=True`` and for
  ``L.exception()`` outside an ``except`` block (sentry-sdk's logging integration sends it as ``threads``).
- `new_event_id`: an event id of the form sentry-sdk gives (``uuid.uuid4().hex``) without a system call.
"""

from __future__ import annotations

import builtins
import os
import random
import sys
import typing

import sentry_sdk
import sentry_sdk.scope
import sentry_sdk.utils

_installed = False

# Frames of the logging machinery between the application's call and this package.
_LOGGING_MODULES = ("logging", "asab.log")


def _groups_in_chain(exc_value: BaseException) -> bool:
	group_type = getattr(builtins, "BaseExceptionGroup", None)
	if group_type is None:  # Python 3.10
		return False
	seen = set()
	current: BaseException | None = exc_value
	first = True
	while current is not None and id(current) not in seen:
		if not first and isinstance(current, group_type):
			return True
		if first and isinstance(current, group_type):
			return False  # sentry-sdk expands a top-level group (and everything under it) itself
		first = False
		seen.add(id(current))
		current = current.__cause__ if current.__suppress_context__ else current.__context__
	return False


def expand_exception_groups(event: dict[str, typing.Any], hint: dict[str, typing.Any]) -> dict[str, typing.Any]:
	"""Event processor: every exception group of the captured exception's chain keeps its children."""
	try:
		exc_info = (hint or {}).get("exc_info")
		if not exc_info or exc_info[1] is None or not _groups_in_chain(exc_info[1]):
			return event
		values = (event.get("exception") or {}).get("values")
		if not isinstance(values, list) or not values:
			return event
		top = values[-1].get("mechanism") or {}
		mechanism = {"type": top.get("type", "generic"), "handled": top.get("handled", True)}
		_, exceptions = sentry_sdk.utils.exceptions_from_error(
			exc_type=exc_info[0],
			exc_value=exc_info[1],
			tb=exc_info[2],
			client_options=sentry_sdk.get_client().options,
			mechanism=mechanism,
		)
		exceptions.reverse()
		event["exception"]["values"] = exceptions
	except Exception:
		sentry_sdk.utils.capture_internal_exception(sys.exc_info())
	return event


def install() -> None:
	"""Register the event processors of this module (once per process)."""
	global _installed
	if not _installed:
		sentry_sdk.scope.add_global_event_processor(expand_exception_groups)
		_installed = True


def current_stack() -> dict[str, typing.Any] | None:
	"""
	The current thread's stack as a Sentry stacktrace, without the frames of the logging machinery and of this
	package (so its innermost frame is the application's logging call); None when it cannot be built.
	"""
	try:
		options = sentry_sdk.get_client().options
		stacktrace = sentry_sdk.utils.current_stacktrace(
			include_local_variables=options.get("include_local_variables", True),
			max_value_length=options.get("max_value_length"),
		)
		frames = stacktrace.get("frames") or []
		while frames and _is_machinery(frames[-1].get("module") or ""):
			frames.pop()
		return {"frames": frames} if frames else None
	except Exception:
		sentry_sdk.utils.capture_internal_exception(sys.exc_info())
		return None


def _is_machinery(module: str) -> bool:
	return module in _LOGGING_MODULES or module == "asab_sentry" or module.startswith("asab_sentry.")


# The package's own generator of ids (and of web requests' sample_rand): seeded from os.urandom, never from
# the application's `random` (a service calling random.seed(n), or tests under pytest-randomly, would repeat
# event and trace ids, which Sentry then drops as duplicates), and reseeded in a forked child.
_ids = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):
	os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))  # a child never repeats the parent's ids

_VERSION_MASK = ~((0xF << 76) | (0x3 << 62))
_VERSION_BITS = (0x4 << 76) | (0x2 << 62)


def new_event_id() -> str:
	"""
	A random version-4 UUID as 32 lowercase hex digits, what sentry-sdk makes with ``uuid.uuid4().hex`` for an
	event without an id. ``os.urandom`` (in ``uuid4``) lets other threads take the interpreter lock, which the
	event loop then waits to get back: in an error storm, with the delivery's threads busy, about 20 µs per event.
	"""
	return "%032x" % (_ids.getrandbits(128) & _VERSION_MASK | _VERSION_BITS)
