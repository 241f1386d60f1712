"""
What was delivered, retried and dropped: counters, client reports and the warnings a user sees.

Every dropped envelope is counted under one of our reasons, reported to Sentry as a client report with the
matching Sentry reason (https://develop.sentry.dev/sdk/telemetry/client-reports/), and said on the
``asab_sentry`` logger at most once a minute per reason (never as an event: `NO_EVENT`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import typing

from sentry_sdk.envelope import Envelope, Item, PayloadRef

from ..logging import NO_EVENT

L = logging.getLogger("asab_sentry.delivery")

#: Our reasons for dropping an envelope and the Sentry client-report reason each is reported as.
#: ``rejected_<status>`` (any 4xx other than 429) is reported as ``send_error``.
REASONS = {
	"queue_full": "queue_overflow",
	"too_old": "network_error",
	"outbox_full": "cache_overflow",
	"rate_limit_expired": "ratelimit_backoff",
	"shutdown": "network_error",
	"corrupt": "internal_sdk_error",
}

_EXPLANATIONS = {
	"queue_full": "the in-memory queue is full ([sentry] queue_max_size)",
	"too_old": "older than the maximum age ([sentry] outbox_max_age) before Sentry accepted them",
	"outbox_full": "the outbox is full ([sentry] outbox_max_size); the oldest were removed",
	"rate_limit_expired": "Sentry's rate limit outlasted their maximum age",
	"shutdown": "not delivered before exit",
	"corrupt": "unreadable outbox files were moved aside",
}

WARNING_INTERVAL = 60.0


def sentry_reason(reason: str) -> str:
	"""The client-report reason of one of our drop reasons."""
	if reason.startswith("rejected_"):
		return "send_error"
	return REASONS.get(reason, "internal_sdk_error")


def explain(reason: str) -> str:
	if reason.startswith("rejected_"):
		return "rejected by Sentry with HTTP {}".format(reason[len("rejected_") :])
	return _EXPLANATIONS.get(reason, reason)


class Losses:
	"""
	Thread-safe counters of the delivery.

	Attributes:
		Counters: ``captured``, ``sent``, ``retried`` and ``dropped_<reason>`` totals since start.
	"""

	def __init__(self, clock: typing.Callable[[], float] = time.monotonic, where: str = "Sentry"):
		self.Counters: collections.Counter[str] = collections.Counter()
		self.Where = where
		self._clock = clock
		self._lock = threading.Lock()
		self._discarded: collections.Counter[tuple[str, str]] = collections.Counter()
		self._last_warning: dict[str, float] = {}
		self._unsaid: collections.Counter[str] = collections.Counter()

	def count(self, name: str, n: int = 1) -> None:
		with self._lock:
			self.Counters[name] += n

	def dropped(
		self, reason: str, envelopes: int = 1, quantities: typing.Iterable[tuple[str, int]] = (), detail: str = ""
	) -> None:
		"""
		Count ``envelopes`` dropped for ``reason``; their ``(category, quantity)`` pairs (`item_quantities`)
		go into the next client report.
		"""
		discards: collections.Counter[tuple[str, str]] = collections.Counter()
		for category, quantity in quantities:
			discards[category, sentry_reason(reason)] += quantity
		with self._lock:
			self.Counters["dropped_" + reason] += envelopes
			self._discarded.update(discards)
			self._unsaid[reason] += envelopes
		self._warn(reason, detail)

	def record_lost_event(self, reason: str, category: str, quantity: int) -> None:
		"""sentry-sdk's own losses (sampling, before_send, ...): only reported, not warned about."""
		with self._lock:
			self._discarded[category, reason] += quantity

	def _warn(self, reason: str, detail: str) -> None:
		now = self._clock()
		with self._lock:
			last = self._last_warning.get(reason)
			if last is not None and now - last < WARNING_INTERVAL:
				return
			self._last_warning[reason] = now
			n = self._unsaid.pop(reason, 0)
		if n:
			L.warning(
				"{} envelope(s) for {} dropped: {}{}.".format(n, self.Where, explain(reason), detail),
				extra={NO_EVENT: True},
			)

	def say_pending(self) -> None:
		"""Say what was dropped since the last warning of each reason (at exit)."""
		with self._lock:
			unsaid = dict(self._unsaid)
			self._unsaid.clear()
		for reason, n in unsaid.items():
			if n:
				L.warning(
					"{} envelope(s) for {} dropped: {}.".format(n, self.Where, explain(reason)), extra={NO_EVENT: True}
				)

	def client_report(self) -> Item | None:
		"""A ``client_report`` item with the discards since the last one, or None when there are none."""
		with self._lock:
			discarded = self._discarded
			self._discarded = collections.Counter()
		if not discarded:
			return None
		return Item(
			PayloadRef(
				json={
					"timestamp": time.time(),
					"discarded_events": [
						{"reason": reason, "category": category, "quantity": quantity}
						for (category, reason), quantity in discarded.items()
					],
				}
			),
			type="client_report",
		)

	def restore(self, item: Item) -> None:
		"""Put a client report that could not be sent back into the counters."""
		payload = item.payload.json or {}
		with self._lock:
			for d in payload.get("discarded_events", []):
				self._discarded[d["category"], d["reason"]] += int(d["quantity"])

	def snapshot(self) -> dict[str, int]:
		with self._lock:
			return dict(self.Counters)


def item_quantities(item: Item) -> list[tuple[str, int]]:
	"""``(data category, quantity)`` a lost item counts as in a client report, as sentry-sdk counts them."""
	category = item.data_category
	if category == "internal":  # a client report itself
		return []
	if category == "transaction":
		event = item.get_transaction_event() or {}
		return [("transaction", 1), ("span", len(event.get("spans") or []) + 1)]
	if category in ("span", "log_item", "trace_metric"):
		count = item.headers.get("item_count")
		quantity = count if isinstance(count, int) and count > 0 else 1
		out = [(category, quantity)]
		if category == "log_item":
			out.append(("log_byte", len(item.get_bytes())))
		elif category == "trace_metric":
			out.append(("trace_metric_byte", len(item.get_bytes())))
		return out
	if category == "attachment":
		return [("attachment", len(item.get_bytes()) or 1)]
	return [(category, 1)]


def client_report_envelope(item: Item) -> Envelope:
	return Envelope(items=[item])
