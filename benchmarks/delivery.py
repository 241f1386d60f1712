#!/usr/bin/env python3
"""
Delivery benchmarks (measured, never asserted), side by side in one run against a local endpoint in its own
process (benchmarks/endpoint.py, answering at once):

	python3 benchmarks/delivery.py            # both
	python3 benchmarks/delivery.py capture    # cost of handing an envelope over, on the calling thread
	python3 benchmarks/delivery.py throughput # envelopes per second delivered

Compared: sentry-sdk's HttpTransport (its queue raised to 100000 so that it does not drop, which it would at
100), asab-sentry's DeliveryTransport, and DeliveryTransport with an outbox (tmpfs or disk: the temp dir).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import sentry_sdk
import sentry_sdk.transport
from sentry_sdk.envelope import Envelope

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from asab_sentry import _sdk  # noqa: E402
from asab_sentry.delivery import DeliveryOptions, DeliveryTransport  # noqa: E402
from asab_sentry.delivery.process import ProcessDelivery  # noqa: E402


class Endpoint:
	def __init__(self, *args: str):
		with socket.socket() as s:
			s.bind(("127.0.0.1", 0))
			self.Port = s.getsockname()[1]
		self.Proc = subprocess.Popen(
			[sys.executable, os.path.join(HERE, "endpoint.py"), str(self.Port), *args],
			stdout=subprocess.PIPE,
			text=True,
		)
		assert self.Proc.stdout.readline().strip() == "ready"
		self.Dsn = "http://key@127.0.0.1:{}/1".format(self.Port)

	def stats(self) -> dict:
		with urllib.request.urlopen("http://127.0.0.1:{}/stats".format(self.Port), timeout=10) as r:
			return json.loads(r.read())

	def reset(self) -> None:
		urllib.request.urlopen(
			urllib.request.Request("http://127.0.0.1:{}/reset".format(self.Port), data=b"", method="POST"), timeout=10
		).read()

	def stop(self) -> None:
		self.Proc.terminate()
		self.Proc.wait(10)


class _Keep(sentry_sdk.transport.Transport):
	def __init__(self):
		super().__init__()
		self.Envelopes: list[Envelope] = []

	def capture_envelope(self, envelope):
		self.Envelopes.append(envelope)


def sample_envelope() -> Envelope:
	"""A realistic error event (exception, 3 frames with locals), produced by sentry-sdk's pipeline."""
	keep = _Keep()
	sentry_sdk.init(transport=keep, default_integrations=False)

	def inner(rows):
		total = sum(rows)
		raise ValueError("bad row count {}".format(total))

	def middle(name):
		return inner([1, 2, 3] * 10)

	try:
		middle("import")
	except ValueError:
		sentry_sdk.capture_exception()
	_sdk.reset()
	return keep.Envelopes[0]


def transports(dsn: str, outbox_dir: str):
	yield (
		"sentry-sdk HttpTransport",
		lambda: sentry_sdk.transport.HttpTransport(
			{
				**sentry_sdk.consts.DEFAULT_OPTIONS,
				"dsn": dsn,
				"transport_queue_size": 100_000,
			}
		),
	)
	yield "asab-sentry DeliveryTransport", lambda: DeliveryTransport({"dsn": dsn})
	yield "asab-sentry ProcessDelivery (delivery = process)", lambda: ready(ProcessDelivery({"dsn": dsn}))
	yield (
		"asab-sentry DeliveryTransport + outbox",
		lambda: DeliveryTransport({"dsn": dsn}, DeliveryOptions(outbox=outbox_dir, outbox_max_size=1 << 34)),
	)


def ready(transport: ProcessDelivery) -> ProcessDelivery:
	"""The delivery process started (its start is not what is measured)."""
	deadline = time.monotonic() + 30
	while not transport._child.Ready and time.monotonic() < deadline:
		time.sleep(0.01)
	return transport


def capture_cost(endpoint: Endpoint, envelope: Envelope, n: int = 2000, rounds: int = 5) -> None:
	print("\n## Capture cost on the calling thread (capture_envelope, µs per envelope, median of {})".format(rounds))
	print("| transport | µs | × HttpTransport |")
	print("| --- | ---: | ---: |")
	results = {}
	with tempfile.TemporaryDirectory() as tmp:
		samples: dict[str, list[float]] = {}
		for _ in range(rounds):
			for name, make in transports(endpoint.Dsn, os.path.join(tmp, "outbox")):
				transport = make()
				start = time.perf_counter()
				for _ in range(n):
					transport.capture_envelope(envelope)
				samples.setdefault(name, []).append((time.perf_counter() - start) / n * 1e6)
				transport.flush(120)
				if getattr(transport, "pending", None) and transport.pending():
					print(
						"  (not flushed: {} {} {})".format(name, transport.pending(), dict(transport.Losses.Counters))
					)
				transport.kill()
		for name, values in samples.items():
			results[name] = statistics.median(values)
	base = results["sentry-sdk HttpTransport"]
	for name, value in results.items():
		print("| {} | {:.1f} | {:.2f} |".format(name, value, value / base))


def throughput(endpoint: Endpoint, envelope: Envelope, n: int = 3000) -> None:
	print("\n## Delivery throughput ({} envelopes to an endpoint answering at once)".format(n))
	print("| transport | envelopes/s | delivered | CPU of this process per envelope, µs |")
	print("| --- | ---: | ---: | ---: |")
	with tempfile.TemporaryDirectory() as tmp:
		for name, make in transports(endpoint.Dsn, os.path.join(tmp, "outbox")):
			endpoint.reset()
			transport = make()
			start = time.perf_counter()
			cpu = time.process_time()  # every thread of this process (not the delivery process)
			for _ in range(n):
				transport.capture_envelope(envelope)
			transport.flush(300)
			took = time.perf_counter() - start
			cpu = time.process_time() - cpu
			transport.kill()
			accepted = endpoint.stats()["accepted"]
			print("| {} | {:.0f} | {} | {:.0f} |".format(name, accepted / took, accepted, cpu / n * 1e6))


def main() -> None:
	which = sys.argv[1:] or ["capture", "throughput"]
	envelope = sample_envelope()
	print(
		"Envelope: {} bytes serialized; Python {}; sentry-sdk {}".format(
			len(envelope.serialize()), sys.version.split()[0], sentry_sdk.VERSION
		)
	)
	endpoint = Endpoint()
	try:
		if "capture" in which:
			capture_cost(endpoint, envelope)
		if "throughput" in which:
			throughput(endpoint, envelope)
	finally:
		endpoint.stop()


if __name__ == "__main__":
	main()
