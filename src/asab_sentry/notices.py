"""
Lines this package writes about itself: one short line per kind of problem per minute, on the
``asab_sentry`` logger, visible without ``debug`` and never turned into a Sentry event.

A caller's bad argument, an event that had to be trimmed, a log record that could not be formatted: each is
said once (then counted and mentioned with the next line of its kind), so that an error in a loop cannot
flood the application's log.
"""

from __future__ import annotations

import logging
import threading
import time

from . import scrub

L = logging.getLogger("asab_sentry")

#: Seconds during which a second line of the same kind is counted instead of written.
INTERVAL = 60.0

#: Longest line written (characters); longer ones are cut with "...".
MAX_LINE = 400

_lock = threading.Lock()
_last: dict[str, float] = {}
_suppressed: dict[str, int] = {}
_MAX_KINDS = 1000

# A record with this attribute never becomes an event (same name as asab_sentry.logging.NO_EVENT).
_NO_EVENT = {"asab_sentry_no_event": True}


def one_line(text: object, limit: int = MAX_LINE) -> str:
	"""
	``text`` as one line of at most ``limit`` characters: control characters escaped, lone surrogates replaced.

	>>> one_line("a\\nb" + "x" * 10, limit=8)
	'a\\\\nbx...'
	"""
	value = text if isinstance(text, str) else safe_str(text)
	if len(value) > limit * 4:
		value = value[: limit * 4]
	value = scrub.sanitize_text(value)
	if not value.isprintable():
		value = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value)
	if len(value) > limit:
		value = value[: max(limit - 3, 0)] + "..."
	return value


def safe_repr(value: object, limit: int = 80) -> str:
	"""
	``repr(value)`` for a message: never raises, one line, at most ``limit`` characters.

	>>> safe_repr("x" * 100, limit=10)
	"'xxxxxx..."
	"""
	try:
		if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
			text = "<int of {} bits>".format(value.bit_length())
		else:
			text = repr(value)
	except Exception:
		text = "<{} object with a broken repr>".format(_type_name(value))
	return one_line(text, limit)


def safe_str(value: object) -> str:
	"""``str(value)``, falling back to repr and then to a placeholder; never raises."""
	try:
		return str(value)
	except Exception:
		try:
			return repr(value)
		except Exception:
			return "<{} object that cannot be printed>".format(_type_name(value))


def _type_name(value: object) -> str:
	try:
		return type(value).__name__
	except Exception:  # pragma: no cover - only a pathological metaclass gets here
		return "?"


def say(kind: str, message: str, level: int = logging.WARNING, logger: logging.Logger | None = None) -> bool:
	"""
	Write ``message`` (made one bounded line) on the ``asab_sentry`` logger (or ``logger``, one of its
	children) unless a line of the same
	``kind`` was written less than `INTERVAL` seconds ago; then count it. Returns whether it was written.
	Never raises.
	"""
	try:
		now = time.monotonic()
		with _lock:
			last = _last.get(kind)
			if last is not None and now - last < INTERVAL:
				_suppressed[kind] = _suppressed.get(kind, 0) + 1
				return False
			if len(_last) >= _MAX_KINDS:
				_last.clear()
				_suppressed.clear()
			_last[kind] = now
			skipped = _suppressed.pop(kind, 0)
		line = one_line(message)
		if skipped:
			line += " ({} more like this in the last minute)".format(skipped)
		(logger or L).log(level, line, extra=_NO_EVENT)
		return True
	except Exception:
		return False


def reset() -> None:
	"""Forget what was said (for tests)."""
	with _lock:
		_last.clear()
		_suppressed.clear()
