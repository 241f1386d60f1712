"""
The delivery's counters through asab.metrics, when the application has the ``asab.MetricsService``.

Two gauges, updated every application tick (on the event loop; the counters are read under their lock):

- ``sentry.delivery``: ``captured``, ``sent``, ``retried``, ``rate_limited`` and ``dropped_<reason>``
  (``queue_full``, ``rejected_<status>``, ``too_old``, ``outbox_full``, ``rate_limit_expired``, ``shutdown``,
  ``corrupt``) — totals since start.
- ``sentry.delivery.queue``: ``items`` and ``bytes`` waiting (bytes of compressed bodies held in memory).
"""

from __future__ import annotations

import typing

from .process import ProcessDelivery
from .transport import DeliveryTransport

COUNTERS = ("captured", "sent", "retried", "rate_limited")


class DeliveryMetrics:
	"""Publishes a `DeliveryTransport`'s counters; created by `SentryService.initialize` when metrics exist."""

	def __init__(self, app: typing.Any, metrics_service: typing.Any, transport: DeliveryTransport | ProcessDelivery):
		self.Transport = transport
		self.Counters = metrics_service.create_gauge(
			"sentry.delivery",
			init_values={name: 0 for name in COUNTERS},
			help="Envelopes for Sentry: captured, sent, retried, rate-limited, dropped by reason (since start)",
		)
		self.Queue = metrics_service.create_gauge(
			"sentry.delivery.queue",
			init_values={"items": 0, "bytes": 0},
			help="Envelopes for Sentry waiting to be sent, and the bytes they hold in memory",
		)
		app.PubSub.subscribe("Application.tick!", self._on_tick)

	def _on_tick(self, message_type: str | None = None) -> None:
		self.update()

	def update(self) -> None:
		for name, value in self.Transport.Losses.snapshot().items():
			if name in COUNTERS or name.startswith("dropped_"):
				self.Counters.set(name, value)
		self.Queue.set("items", self.Transport.pending())
		self.Queue.set("bytes", self.Transport.QueuedBytes)
