"""
Delivery of envelopes to Sentry: what sentry-sdk's ``HttpTransport`` does, without losing anything silently.

- `transport` — `DeliveryTransport` (the sentry-sdk `Transport`), `DeliveryOptions`, the sender threads.
- `process` — `ProcessDelivery` (``[sentry] delivery = process``): the same delivery in a helper process.
- `ratelimits` — ``429``, ``Retry-After`` and ``X-Sentry-Rate-Limits``: when each category may go again.
- `outbox` — the optional on-disk outbox: locked directory, file format, size and age bounds.
- `losses` — counters by reason, client reports, the once-a-minute warnings.
- `spotlight` — `SpotlightTransport`, a copy of every envelope for a local Spotlight viewer.
- `metrics` — the counters published through asab.metrics.
"""

from .outbox import OutboxLocked
from .transport import DeliveryOptions, DeliveryTransport

__all__ = ["DeliveryOptions", "DeliveryTransport", "OutboxLocked"]
