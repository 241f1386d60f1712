#!/usr/bin/env python3
"""
The thundering herd, simulated: N service instances come back after an outage, each with an outbox of M
envelopes, and drain against ONE rate-limited endpoint (benchmarks/endpoint.py in its own process: at most R
requests accepted per second, 429 + Retry-After over it).

	python3 benchmarks/herd.py                 # N = 1, 5, 10, 20, 40; M = 20; R = 100/s
	python3 benchmarks/herd.py 1 10 50         # other N

Each instance is a real DeliveryTransport with its own outbox (all in this process: threads, as instances
would be processes; Python's GIL only slows them down). Printed per N: the peak requests in one second seen
by the endpoint, how many were answered 429, and how long until every outbox was empty. Without pacing every
instance would send its whole outbox at once (N x M requests in the first second).
"""

from __future__ import annotations

import gzip
import os
import sys
import tempfile
import time

from sentry_sdk.envelope import Envelope

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from delivery import Endpoint  # noqa: E402

from asab_sentry.delivery import DeliveryOptions, DeliveryTransport  # noqa: E402
from asab_sentry.delivery.outbox import Outbox  # noqa: E402

M = 20
RATE = 100


def body(i: int) -> bytes:
	envelope = Envelope()
	envelope.add_event({"message": "cached {}".format(i), "level": "error", "platform": "python"})
	return gzip.compress(envelope.serialize())


def run(n: int, endpoint: Endpoint) -> tuple[int, int, float]:
	endpoint.reset()
	with tempfile.TemporaryDirectory() as tmp:
		for instance in range(n):
			box = Outbox(os.path.join(tmp, str(instance)), 1 << 30, 86400)
			for i in range(M):
				box.write(body(i))
			box.close()
		start = time.monotonic()
		transports = [
			DeliveryTransport({"dsn": endpoint.Dsn}, DeliveryOptions(outbox=os.path.join(tmp, str(instance))))
			for instance in range(n)
		]
		while any(t.pending() for t in transports) and time.monotonic() - start < 600:
			time.sleep(0.1)
		took = time.monotonic() - start
		for t in transports:
			t.kill()
	stats = endpoint.stats()
	return stats["peak_per_second"], stats["limited"], took


def main() -> None:
	sizes = [int(a) for a in sys.argv[1:]] or [1, 5, 10, 20, 40]
	endpoint = Endpoint("--rate-limit", str(RATE), "--retry-after", "1")
	try:
		print("Each instance drains {} cached envelopes; the endpoint accepts {} requests/s.".format(M, RATE))
		print("| instances N | peak requests/s | answered 429 | all drained after (s) | unpaced burst would be |")
		print("| ---: | ---: | ---: | ---: | ---: |")
		for n in sizes:
			peak, limited, took = run(n, endpoint)
			print("| {} | {} | {} | {:.1f} | {} |".format(n, peak, limited, took, n * M), flush=True)
	finally:
		endpoint.stop()


if __name__ == "__main__":
	main()
