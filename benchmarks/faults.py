#!/usr/bin/env python3
"""
Fault scenarios side by side: sentry-sdk's default HttpTransport against asab-sentry's delivery, each against
the same switchable endpoint on 127.0.0.1 (tests/faultserver.py). Prints the table of docs/delivery.md.

	python3 benchmarks/faults.py            # the full figures (a 10 s outage)
	python3 benchmarks/faults.py --short    # a 2 s outage, for a quick look

Measured, not asserted (the tests assert the behaviour: tests/test_delivery.py, tests/test_outbox.py).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time

import sentry_sdk
import sentry_sdk.transport

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "src"))

from asab_sentry import _sdk  # noqa: E402
from asab_sentry.delivery import DeliveryOptions, DeliveryTransport  # noqa: E402
from faultserver import FaultServer  # noqa: E402

SDK = "sentry-sdk HttpTransport"
OURS = "asab-sentry"


class SaidLines(logging.Handler):
	"""What a user sees without debug: WARNING and above, on any logger."""

	def __init__(self):
		super().__init__(logging.WARNING)
		self.Lines: list[str] = []

	def emit(self, record):
		self.Lines.append(record.getMessage())


def start(kind: str, server: FaultServer, timeout: float | None = None) -> None:
	_sdk.reset()
	if kind == SDK:
		transport: object = None
		if timeout is not None:

			class ShortTimeout(sentry_sdk.transport.HttpTransport):
				TIMEOUT = timeout

			transport = ShortTimeout
		sentry_sdk.init(dsn=server.dsn, transport=transport, default_integrations=False, traces_sample_rate=1.0)
	else:
		options = DeliveryOptions(request_timeout=timeout) if timeout is not None else DeliveryOptions()
		sentry_sdk.init(
			dsn=server.dsn,
			transport=DeliveryTransport({"dsn": server.dsn}, options),
			default_integrations=False,
			traces_sample_rate=1.0,
		)


def settle(server: FaultServer, quiet: float = 6.0, limit: float = 90.0) -> int:
	"""Wait until nothing new arrived for ``quiet`` seconds; the number of events delivered."""
	deadline = time.monotonic() + limit
	last, since = -1, time.monotonic()
	while time.monotonic() < deadline:
		n = len(server.events())
		if n != last:
			last, since = n, time.monotonic()
		elif time.monotonic() - since > quiet:
			break
		time.sleep(0.1)
	return last


def outage(kind: str, seconds: float, n: int = 1000) -> str:
	server = FaultServer()
	try:
		start(kind, server)
		server.down()
		t0 = time.monotonic()
		for i in range(n):
			sentry_sdk.capture_message("outage {}".format(i))
		time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
		server.up()
		return "{} of {}".format(settle(server), n)
	finally:
		_sdk.reset()
		server.close()


def errors_then_ok(kind: str, n: int = 200, seconds: float = 3.0) -> str:
	server = FaultServer()
	try:
		start(kind, server)
		server.Status = 500
		for i in range(n):
			sentry_sdk.capture_message("m{}".format(i))
		time.sleep(seconds)
		server.Status = 200
		return "{} of {}".format(settle(server), n)
	finally:
		_sdk.reset()
		server.close()


def retry_after(kind: str, n: int = 100) -> str:
	server = FaultServer()
	state = {"first": True}

	def behaviour(request):
		if state["first"]:
			state["first"] = False
			return 429, {"Retry-After": "2"}
		return 200, {}

	server.Behaviour = behaviour
	try:
		start(kind, server)
		for i in range(n):
			sentry_sdk.capture_message("m{}".format(i))
		delivered = settle(server)
		t429 = server.Requests[0].At
		inside = sum(1 for r in server.Requests[1:] if t429 + 0.3 < r.At < t429 + 1.7)
		return "{} of {} ({} requests inside the window)".format(delivered, n, inside)
	finally:
		_sdk.reset()
		server.close()


def category_limit(kind: str, n: int = 20) -> str:
	server = FaultServer()
	state = {"first": True}

	def behaviour(request):
		if state["first"] and "transaction" in request.categories:
			state["first"] = False
			return 429, {"X-Sentry-Rate-Limits": "2:transaction:organization"}
		return 200, {}

	server.Behaviour = behaviour
	try:
		start(kind, server)
		for i in range(n):
			with sentry_sdk.start_transaction(name="t{}".format(i)):
				pass
			sentry_sdk.capture_message("e{}".format(i))
		settle(server)
		transactions = sum(1 for r in server.Requests if r.Status == 200 and "transaction" in r.categories)
		return "errors {} of {}, transactions {} of {}".format(len(server.events()), n, transactions, n)
	finally:
		_sdk.reset()
		server.close()


def slow(kind: str, n: int = 20) -> str:
	server = FaultServer(delay=1.0)
	try:
		start(kind, server, timeout=0.5)
		for i in range(n):
			sentry_sdk.capture_message("slow {}".format(i))
		time.sleep(3.0)
		server.Delay = 0.0
		settle(server)
		distinct = len({e.get("message") for e in server.events()})
		return "{} of {} (client timeout 0.5 s, server 1 s for 3 s)".format(distinct, n)
	finally:
		_sdk.reset()
		server.close()


def rejected(kind: str, n: int = 10) -> str:
	server = FaultServer()
	server.Status = 413
	said = SaidLines()
	logging.getLogger().addHandler(said)
	try:
		start(kind, server)
		for i in range(n):
			sentry_sdk.capture_message("big {}".format(i))
		sentry_sdk.flush(5)
		time.sleep(0.5)
		_sdk.reset()
		lines = [line for line in said.Lines if "413" in line]
		return "{} rejected; said without debug: {}".format(
			sum(1 for r in server.Requests if r.Status == 413), "{} line(s)".format(len(lines)) if lines else "nothing"
		)
	finally:
		logging.getLogger().removeHandler(said)
		server.close()


APP = r"""
import logging, sys, time, asab, asab_sentry, sentry_sdk.transport
asab.Config.read_dict({"sentry": {"data_source_name": sys.argv[1], **({"outbox": sys.argv[4]} if len(sys.argv) > 4 else {})}})
T = {}
class App(asab.Application):
	def __init__(self):
		super().__init__(args=[])
		kind = sys.argv[2]
		self.S = asab_sentry.SentryService(self, transport=sentry_sdk.transport.HttpTransport if kind == "sdk" else None)
	async def main(self):
		mode = sys.argv[3]
		if mode == "burst":
			for row in range(1000):
				logging.getLogger("importer").error("Row %d rejected", row)
		elif mode == "stream":
			import asyncio
			for i in range(100000):
				self.S.capture_message("row %d" % i)
				print(i, flush=True)
				await asyncio.sleep(0.001)
		elif mode == "drain":
			import asyncio
			while self.S.Delivery is not None and self.S.Delivery.pending():
				await asyncio.sleep(0.05)
		T["stop"] = time.monotonic()
		self.stop()
App().run()
print("exit %.2f" % (time.monotonic() - T["stop"]), flush=True)
"""


def burst_then_exit(kind: str) -> str:
	server = FaultServer(delay=0.02)
	try:
		out = subprocess.run(
			[sys.executable, "-c", APP, server.dsn, "sdk" if kind == SDK else "ours", "burst"],
			capture_output=True,
			text=True,
			timeout=120,
			cwd=ROOT,
		)
		took = [line for line in out.stdout.splitlines() if line.startswith("exit ")]
		said = [line for line in out.stderr.splitlines() if "dropped" in line or "not delivered" in line]
		return "{} of 1000, exit {} s after stop(){}".format(
			len(server.events()), took[0][5:] if took else "?", "; said: " + said[0][27:] if said else ""
		)
	finally:
		server.close()


def kill_9(kind: str) -> str:
	server = FaultServer(delay=0.05)
	outbox = tempfile.mkdtemp(prefix="asab-sentry-outbox-")
	extra = [outbox] if kind == OURS else []
	try:
		child = subprocess.Popen(
			[sys.executable, "-c", APP, server.dsn, "sdk" if kind == SDK else "ours", "stream", *extra],
			stdout=subprocess.PIPE,
			stderr=subprocess.DEVNULL,
			text=True,
			cwd=ROOT,
		)
		captured = -1
		for line in child.stdout:
			captured = int(line)
			if captured >= 199:
				break
		child.send_signal(signal.SIGKILL)
		rest = child.communicate(timeout=30)[0]
		captured = max([captured] + [int(x) for x in rest.split() if x.isdigit()]) + 1
		server.Delay = 0.0
		subprocess.run(
			[sys.executable, "-c", APP, server.dsn, "sdk" if kind == SDK else "ours", "drain", *extra],
			capture_output=True,
			timeout=300,
			cwd=ROOT,
		)
		got = {e.get("message") for e in server.events()} & {"row {}".format(i) for i in range(captured)}
		return "{} of {} captured before the kill".format(len(got), captured)
	finally:
		server.close()


def main() -> None:
	short = "--short" in sys.argv
	seconds = 2.0 if short else 10.0
	logging.basicConfig(level=logging.CRITICAL)
	logging.getLogger("asab_sentry").setLevel(logging.WARNING)
	scenarios = [
		("endpoint down {:g} s while 1000 errors are captured, then up".format(seconds), lambda k: outage(k, seconds)),
		("500 for 3 s, then 200 (200 errors)", errors_then_ok),
		("429 Retry-After: 2 on the first request (100 errors)", retry_after),
		("X-Sentry-Rate-Limits 2 s for transactions (20 transactions + 20 errors)", category_limit),
		("server slower than the client timeout", slow),
		("413 for every request (10 errors)", rejected),
		("1000 error logs then app.stop(), endpoint answers after 20 ms", burst_then_exit),
		("kill -9 mid-stream, restart (outbox for asab-sentry)", kill_9),
	]
	print("| scenario | {} | {} |".format(SDK, OURS))
	print("| --- | --- | --- |")
	for name, scenario in scenarios:
		row = [scenario(kind) for kind in (SDK, OURS)]
		print("| {} | {} | {} |".format(name, *row), flush=True)


if __name__ == "__main__":
	main()
