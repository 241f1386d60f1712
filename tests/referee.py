"""
Sentry Relay's normalizer as the referee of every event and transaction the tests produce: an item Relay
reports errors for is invalid by Sentry's own rules, and the test that produced it fails.
"""

from __future__ import annotations

import json
import threading

try:
	from sentry_relay.processing import StoreNormalizer
except ImportError:  # pragma: no cover - sentry-relay is a test dependency; conftest reports it
	StoreNormalizer = None

VALIDATED_TYPES = ("event", "transaction")


class Referee:
	"""Collects Relay's verdicts; `problems` lists every invalid item."""

	def __init__(self) -> None:
		if StoreNormalizer is None:
			raise RuntimeError("sentry-relay is not installed: pip install -e '.[test]'")
		self._normalizer = StoreNormalizer(project_id=1)
		self._lock = threading.Lock()
		self.problems: list[str] = []
		self.checked = 0

	def check(self, item_type: str, payload: bytes) -> dict:
		"""Normalize one event or transaction payload; record and return Relay's output."""
		with self._lock:
			out = self._normalizer.normalize_event(raw_event=payload)
			self.checked += 1
			if out.get("errors"):
				self.problems.append(
					"{} {}: {}".format(item_type, out.get("event_id"), json.dumps(out["errors"])[:2000])
				)
		return out

	def check_sdk_envelope(self, envelope) -> None:
		"""A `sentry_sdk.envelope.Envelope` (from the capture fixture)."""
		for item in envelope.items:
			if item.type in VALIDATED_TYPES:
				self.check(item.type, item.payload.get_bytes())

	def check_collector_envelope(self, envelope) -> None:
		"""An envelope as parsed by the collector."""
		for item in envelope.items:
			if item.type in VALIDATED_TYPES:
				self.check(item.type, item.payload)
