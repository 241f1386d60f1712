"""
Sentry's rate limits, as the server announces them.

Rules (https://develop.sentry.dev/sdk/expected-features/rate-limiting/):

- ``X-Sentry-Rate-Limits: <seconds>:<categories>:<scope>[:<reason>[:<namespaces>]], ...`` on any response
  limits each listed data category (``;``-separated; empty means every category) for that many seconds.
- A 429 without that header limits everything for ``Retry-After`` seconds (60 when absent or unreadable).

Unlike sentry-sdk, which drops what is limited, the delivery keeps it and sends it when the window ends.
"""

from __future__ import annotations

import email.utils
import threading
import time
import typing

DEFAULT_RETRY_AFTER = 60.0

#: Key of the limit that applies to every category.
ALL = ""


def parse_rate_limits(header: str) -> list[tuple[str, float]]:
	"""
	``(category, seconds)`` pairs of an ``X-Sentry-Rate-Limits`` header; ``""`` is every category.

	>>> parse_rate_limits("60:transaction;error:organization, 2::key")
	[('transaction', 60.0), ('error', 60.0), ('', 2.0)]
	"""
	limits = []
	for part in header.split(","):
		fields = part.strip().split(":")
		if len(fields) < 2:
			continue
		try:
			seconds = float(fields[0])
		except ValueError:
			continue
		if not (seconds >= 0) or seconds == float("inf"):
			continue
		categories = [c.strip() for c in fields[1].split(";") if c.strip()] or [ALL]
		limits.extend((category, seconds) for category in categories)
	return limits


def parse_retry_after(value: str | None) -> float:
	"""
	Seconds of a ``Retry-After`` header (a number or an HTTP date); 60 when absent or unreadable.

	>>> parse_retry_after("5"), parse_retry_after(None), parse_retry_after("soon")
	(5.0, 60.0, 60.0)
	"""
	if value is None:
		return DEFAULT_RETRY_AFTER
	try:
		seconds = float(value.strip())
		return seconds if 0 <= seconds < float("inf") else DEFAULT_RETRY_AFTER
	except ValueError:
		pass
	try:
		when = email.utils.parsedate_to_datetime(value)
		return max(0.0, when.timestamp() - time.time())
	except (TypeError, ValueError, IndexError, OverflowError):
		return DEFAULT_RETRY_AFTER


class RateLimits:
	"""Until when (monotonic seconds) each data category may not be sent. Thread-safe."""

	def __init__(self, clock: typing.Callable[[], float] = time.monotonic):
		self._clock = clock
		self._until: dict[str, float] = {}
		self._lock = threading.Lock()

	def update(self, status: int, rate_limits: str | None, retry_after: str | None) -> bool:
		"""Record the limits of one response; True when it set any."""
		now = self._clock()
		if rate_limits:
			limits = parse_rate_limits(rate_limits)
		elif status == 429:
			limits = [(ALL, parse_retry_after(retry_after))]
		else:
			return False
		with self._lock:
			for category, seconds in limits:
				self._until[category] = max(self._until.get(category, 0.0), now + seconds)
		return bool(limits)

	def blocked_until(self, categories: typing.Iterable[str]) -> float:
		"""When the last of ``categories`` (and the every-category limit) ends; 0 when none is limited."""
		now = self._clock()
		until = self._until.get(ALL, 0.0)
		for category in categories:
			until = max(until, self._until.get(category, 0.0))
		return until if until > now else 0.0

	def any_active(self) -> bool:
		now = self._clock()
		return any(until > now for until in list(self._until.values()))

	def windows(self) -> dict[str, float]:
		"""Until when (monotonic seconds) each category is limited: what the delivery process tells the service."""
		with self._lock:
			return dict(self._until)

	def adopt(self, windows: dict[str, float]) -> None:
		"""Take the windows of another `RateLimits` (the delivery process's; the monotonic clock is system-wide)."""
		with self._lock:
			self._until = dict(windows)
