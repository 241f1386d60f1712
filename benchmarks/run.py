#!/usr/bin/env python3
"""
Benchmarks: measured, never asserted. One command, one run, side by side:

	.venv/bin/python benchmarks/run.py            # everything
	.venv/bin/python benchmarks/run.py hotpath    # logging / capture / tracing overhead
	.venv/bin/python benchmarks/run.py finalpass  # the final pass (scrub, text, size limits) on and off
	.venv/bin/python benchmarks/run.py collector  # envelopes per second into the local collector (collector.py)
	.venv/bin/python benchmarks/run.py --quick    # a smoke run: few iterations, the numbers mean nothing

Hot paths: median microseconds per operation over several alternating rounds, each configuration with the
same no-op transport, as ratios against plain logging and against plain sentry-sdk. The machine is noisy:
compare the ratios, and run it more than once.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time

try:
	import sentry_sdk
	import sentry_sdk.transport
	from sentry_sdk.integrations.logging import LoggingIntegration
except ImportError:
	sys.exit("benchmarks/run.py needs the project's virtualenv: .venv/bin/python benchmarks/run.py")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from asab_sentry import _sdk  # noqa: E402

ROUNDS = 7
SCALE = 1.0  # iterations per measurement, relative; --quick lowers it


class NullTransport(sentry_sdk.transport.Transport):
	def capture_envelope(self, envelope):
		pass


def measure(operation, n):
	start = time.perf_counter()
	for _ in range(n):
		operation()
	return (time.perf_counter() - start) / n * 1e6


def setup_plain():
	_sdk.reset()
	root = logging.getLogger()
	root.handlers[:] = [logging.StreamHandler(open(os.devnull, "w"))]
	root.setLevel(logging.INFO)


def setup_sdk():
	setup_plain()
	sentry_sdk.init(
		transport=NullTransport(),
		integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
		traces_sample_rate=1.0,
	)


def setup_ours():
	setup_plain()
	import asab
	import asab.abc.singleton

	import asab_sentry
	from asab_sentry import service

	asab.abc.singleton.Singleton._instances.clear()
	asab.Config.read_dict({"sentry": {"traces_sample_rate": "1.0"}})
	service._transport_override[:] = [NullTransport()]
	app = asab.Application(args=[])
	asab_sentry.SentryService(app)
	service._transport_override.clear()
	logging.getLogger().setLevel(logging.INFO)
	root = logging.getLogger()
	root.handlers[:] = [h for h in root.handlers if type(h).__name__ == "SentryLogHandler"] + [
		logging.StreamHandler(open(os.devnull, "w"))
	]


def fail():
	local = {"a": 1}  # noqa: F841
	raise ValueError("benchmark")


def operations(logger):
	def info():
		logger.info("user %s logged in", "alice")

	def error():
		logger.error("cannot connect to %s", "db")

	def capture():
		try:
			fail()
		except ValueError as e:
			sentry_sdk.capture_exception(e)

	def trace():
		with sentry_sdk.start_transaction(op="task", name="bench"):
			with sentry_sdk.start_span(op="db", name="q"):
				pass

	return {
		"logger.info (breadcrumb)": (info, 20000),
		"logger.error (event)": (error, 2000),
		"capture_exception": (capture, 1000),
		"transaction + span (sampled)": (trace, 2000),
	}


def hotpath():
	logger = logging.getLogger("bench")
	configs = {"plain logging": setup_plain, "sentry-sdk": setup_sdk, "asab-sentry": setup_ours}
	results: dict[str, dict[str, list[float]]] = {}
	for _ in range(ROUNDS):
		for name, setup in configs.items():
			setup()
			for op_name, (op, n) in operations(logger).items():
				if name == "plain logging" and op_name in ("capture_exception", "transaction + span (sampled)"):
					continue
				results.setdefault(op_name, {}).setdefault(name, []).append(measure(op, max(1, int(n * SCALE))))
	_sdk.reset()
	print("Hot paths: median µs per operation over {} rounds (no-op transport)".format(ROUNDS))
	print(
		"{:<30} {:>9} {:>11} {:>12} {:>9} {:>9}".format(
			"operation", "plain", "sentry-sdk", "asab-sentry", "/plain", "/sdk"
		)
	)
	for op_name, by_config in results.items():
		med = {k: statistics.median(v) for k, v in by_config.items()}
		plain = med.get("plain logging")
		print(
			"{:<30} {:>9} {:>11.1f} {:>12.1f} {:>9} {:>8.2f}x".format(
				op_name,
				"{:.1f}".format(plain) if plain else "-",
				med["sentry-sdk"],
				med["asab-sentry"],
				"{:.2f}x".format(med["asab-sentry"] / plain) if plain else "-",
				med["asab-sentry"] / med["sentry-sdk"],
			)
		)


def collector() -> None:
	"""Envelopes per second into the collector from 1 and 4 concurrent sentry-sdk clients: collector.py."""
	sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
	import collector as collector_benchmark

	collector_benchmark.main([] if SCALE == 1.0 else ["--clients", "1", "--count", str(max(10, int(3000 * SCALE)))])


def finalpass():
	"""
	The final pass (scrub, text, size limits: limits.FinalPass, sentry-sdk's before_send) on and off, side by
	side, for an error logged with 100 breadcrumbs pending, and for an event that must be trimmed.
	"""
	import sentry_sdk.scope

	from asab_sentry import breadcrumbs

	logger = logging.getLogger("bench")
	setup_ours()
	client = sentry_sdk.get_client()
	final_pass = client.options["before_send"]
	for n in range(100):
		logger.info("request %s done", n, extra={"status": 200, "path": "/api/items/{}".format(n)})

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
		"event of 1.2 MB (trimmed)": (oversized, 20),  # 150 contexts of 8 kB
	}
	results: dict[str, dict[str, list[float]]] = {}
	for _ in range(ROUNDS):
		for label, before_send in (("off", breadcrumbs.restore), ("on", final_pass)):
			client.options["before_send"] = before_send
			for name, (op, n) in ops.items():
				results.setdefault(name, {}).setdefault(label, []).append(measure(op, max(1, int(n * SCALE))))
	client.options["before_send"] = final_pass
	_sdk.reset()
	print("Final pass: median µs per operation over {} rounds (no-op transport)".format(ROUNDS))
	print("{:<36} {:>10} {:>10} {:>8}".format("operation", "pass off", "pass on", "on/off"))
	for name, by in results.items():
		off, on = statistics.median(by["off"]), statistics.median(by["on"])
		print("{:<36} {:>10.1f} {:>10.1f} {:>7.2f}x".format(name, off, on, on / off))


if __name__ == "__main__":
	args = sys.argv[1:]
	if "--quick" in args:
		args.remove("--quick")
		ROUNDS, SCALE = 1, 0.01
	which = args or ["hotpath", "finalpass", "collector"]
	if "hotpath" in which:
		hotpath()
	if "finalpass" in which:
		finalpass()
	if "collector" in which:
		collector()
