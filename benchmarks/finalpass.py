#!/usr/bin/env python3
"""
The cost of the final pass (limits.FinalPass: scrub, text, size limits; sentry-sdk's before_send), measured,
never asserted: the same operations with the pass on and off, side by side in one run, as a ratio.

	.venv/bin/python benchmarks/finalpass.py           # 7 alternating rounds
	.venv/bin/python benchmarks/finalpass.py --quick   # a smoke run: the numbers mean nothing
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


def measure(operation, n: int) -> float:
	start = time.perf_counter()
	for _ in range(n):
		operation()
	return (time.perf_counter() - start) / n * 1e6


def fail():
	row = {"id": 7, "password": "hunter2"}  # noqa: F841 (a local variable, scrubbed)
	raise ValueError("benchmark")


def main() -> None:
	quick = "--quick" in sys.argv
	rounds, scale = (1, 0.02) if quick else (7, 1.0)

	import asab
	import sentry_sdk
	import sentry_sdk.transport

	import asab_sentry
	from asab_sentry import breadcrumbs

	class NullTransport(sentry_sdk.transport.Transport):
		def capture_envelope(self, envelope):
			pass

	asab.Config.read_dict({"sentry": {"data_source_name": "http://k@127.0.0.1:9/1"}})
	app = asab.Application(args=[])
	asab_sentry.SentryService(app, transport=NullTransport())
	root = logging.getLogger()
	root.handlers[:] = [h for h in root.handlers if type(h).__name__ == "SentryLogHandler"]
	root.setLevel(logging.INFO)
	logger = logging.getLogger("bench")
	for n in range(100):
		logger.info("request %s done", n, extra={"status": 200, "path": "/api/items/{}".format(n)})

	client = sentry_sdk.get_client()
	final_pass = client.options["before_send"]

	def error():
		logger.error("cannot connect to %s", "db")

	def capture():
		try:
			fail()
		except ValueError as e:
			sentry_sdk.capture_exception(e)

	def oversized():
		sentry_sdk.capture_message("big", contexts={"blob{}".format(i): {"x": "x" * 8000} for i in range(150)})

	ops = {
		"logger.error, 100 breadcrumbs": (error, 300),
		"capture_exception, 100 breadcrumbs": (capture, 300),
		"event of 1.2 MB (trimmed)": (oversized, 20),
	}
	results: dict[str, dict[str, list[float]]] = {}
	for _ in range(rounds):
		for label, before_send in (("off", breadcrumbs.restore), ("on", final_pass)):
			client.options["before_send"] = before_send
			for name, (op, n) in ops.items():
				results.setdefault(name, {}).setdefault(label, []).append(measure(op, max(1, int(n * scale))))
	client.options["before_send"] = final_pass
	print("Final pass: median µs per operation over {} rounds (no-op transport)".format(rounds))
	print("{:<36} {:>10} {:>10} {:>8}".format("operation", "pass off", "pass on", "on/off"))
	for name, by in results.items():
		off, on = statistics.median(by["off"]), statistics.median(by["on"])
		print("{:<36} {:>10.1f} {:>10.1f} {:>7.2f}x".format(name, off, on, on / off))


if __name__ == "__main__":
	main()
