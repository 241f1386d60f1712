"""
The delivery (asab_sentry.delivery) under injected faults, over real HTTP on 127.0.0.1: an endpoint that is
down, answers 500, rate-limits, is slower than the client's timeout, or rejects with 413.
The figures of the same scenarios with sentry-sdk's own HttpTransport are in docs/delivery.md
(benchmarks/faults.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest
import sentry_sdk

from asab_sentry.delivery import DeliveryOptions, DeliveryTransport
from asab_sentry.delivery import losses as losses_module
from asab_sentry.logging import NO_EVENT
from faultserver import FaultServer
from helpers import App, configure, run_app

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_RETRY = {"retry_initial": 0.05, "retry_max": 0.3}


@pytest.fixture
def server():
	s = FaultServer()
	try:
		yield s
	finally:
		sentry_sdk.get_client().close(timeout=0.5)  # stop sending before the server goes
		s.close()


def start(server: FaultServer, **options) -> DeliveryTransport:
	"""sentry-sdk's real client with our transport, sending to the fault server."""
	transport = DeliveryTransport({"dsn": server.dsn, "send_client_reports": True}, DeliveryOptions(**options))
	sentry_sdk.init(dsn=server.dsn, transport=transport, default_integrations=False, traces_sample_rate=1.0)
	return transport


def messages(server: FaultServer) -> list[str]:
	return [e.get("message") or e.get("logentry", {}).get("message") for e in server.events()]


def wait_for(condition, timeout: float = 30.0) -> bool:
	deadline = time.monotonic() + timeout
	while not condition():
		if time.monotonic() > deadline:
			return False
		time.sleep(0.02)
	return True


def delivery_warnings(caplog) -> list[str]:
	return [r.getMessage() for r in caplog.records if r.name == "asab_sentry.delivery" and r.levelno >= logging.WARNING]


def test_endpoint_down_during_a_burst_then_up(server):
	transport = start(server, **FAST_RETRY)
	server.down()
	for i in range(500):
		sentry_sdk.capture_message("burst {}".format(i))
	assert wait_for(lambda: transport.Losses.Counters["retried"] >= 3)
	assert server.events() == []
	server.up()
	server.wait_events(500)
	assert sorted(messages(server)) == sorted("burst {}".format(i) for i in range(500))
	assert not any(k.startswith("dropped_") for k in transport.Losses.Counters)


def test_500s_then_200(server):
	transport = start(server, **FAST_RETRY)
	server.Status = 500
	for i in range(30):
		sentry_sdk.capture_message("m{}".format(i))
	assert wait_for(lambda: len(server.Requests) >= 5)
	server.Status = 200
	server.wait_events(30)
	assert sorted(messages(server)) == sorted("m{}".format(i) for i in range(30))
	assert transport.Losses.Counters["retried"] >= 1


def _first_then_ok(status: int, headers: dict[str, str], when=lambda request: True):
	"""The first request that ``when`` selects gets ``status`` and ``headers``; every other one 200."""
	state = {"done": False}

	def behaviour(request):
		if not state["done"] and when(request):
			state["done"] = True
			return status, headers
		return 200, {}

	return behaviour


def test_429_retry_after_delays_everything_then_delivers_it(server):
	server.Behaviour = _first_then_ok(429, {"Retry-After": "2"})
	transport = start(server)
	sentry_sdk.capture_message("first")
	assert wait_for(transport.RateLimits.any_active)  # the client has read the 429
	limited_at = server.Requests[0].At
	for i in range(10):
		sentry_sdk.capture_message("waiting {}".format(i))
	server.wait_events(11)
	assert sorted(messages(server)) == sorted(["first"] + ["waiting {}".format(i) for i in range(10)])
	# Nothing was sent inside the window (0.3 s of margin on each side for a slow machine).
	inside = [r for r in server.Requests[1:] if limited_at + 0.3 < r.At < limited_at + 1.7]
	assert inside == []


def test_x_sentry_rate_limits_per_category(server):
	server.Behaviour = _first_then_ok(
		429, {"X-Sentry-Rate-Limits": "2:transaction:organization"}, when=lambda r: "transaction" in r.categories
	)
	transport = start(server)
	with sentry_sdk.start_transaction(name="first"):
		pass
	assert wait_for(transport.RateLimits.any_active)  # the client has read the 429
	limited_at = server.Requests[0].At
	for i in range(3):
		with sentry_sdk.start_transaction(name="t{}".format(i)):
			pass
		sentry_sdk.capture_message("error {}".format(i))
	# Errors are not limited: they arrive at once, inside the transactions' window.
	server.wait_events(3)
	assert all(r.At < limited_at + 1.7 for r in server.Requests if "error" in r.categories)
	assert wait_for(lambda: sum("transaction" in r.categories for r in server.Requests if r.Status == 200) == 4)
	transactions = [r for r in server.Requests[1:] if "transaction" in r.categories]
	assert [r for r in transactions if limited_at + 0.3 < r.At < limited_at + 1.7] == []


def test_server_slower_than_the_client_timeout(server):
	transport = start(server, request_timeout=0.3, **FAST_RETRY)
	server.Delay = 1.0
	for i in range(4):
		sentry_sdk.capture_message("slow {}".format(i))
	assert wait_for(lambda: transport.Losses.Counters["retried"] >= 4)
	server.Delay = 0.0
	assert wait_for(lambda: transport.pending() == 0)
	# Each arrived (those the server finished after the client gave up arrived twice: at least once).
	assert set(messages(server)) == {"slow {}".format(i) for i in range(4)}


def test_413_is_dropped_counted_said_and_reported(server, caplog):
	transport = start(server)
	server.Status = 413
	for i in range(3):
		sentry_sdk.capture_message("too big {}".format(i))
	assert wait_for(lambda: transport.Losses.Counters["dropped_rejected_413"] == 3)
	said = delivery_warnings(caplog)
	assert len(said) == 1 and "HTTP 413" in said[0]  # once, not once per envelope
	assert all(getattr(r, NO_EVENT, False) for r in caplog.records if r.name == "asab_sentry.delivery")
	# The loss reaches Sentry as a client report, as sentry-sdk's own losses do.
	server.Status = 200
	sentry_sdk.flush(5)
	assert wait_for(lambda: server.client_reports())
	discarded = [d for r in server.client_reports() for d in r["discarded_events"]]
	assert {"reason": "send_error", "category": "error", "quantity": 3} in discarded


def test_queue_full_drops_new_envelopes_counts_and_warns_once(server, caplog):
	transport = start(server, queue_max_size=4000, **FAST_RETRY)
	server.down()
	for i in range(100):
		sentry_sdk.capture_message("m{}".format(i), extras={"pad": "x" * 500})
	assert wait_for(lambda: transport.Losses.Counters["captured"] == 100)  # all 100 queued or dropped
	dropped = transport.Losses.Counters["dropped_queue_full"]
	assert 0 < dropped < 100
	assert transport.QueuedBytes <= 4000
	said = delivery_warnings(caplog)
	assert len(said) == 1 and "queue_max_size" in said[0]
	server.up()
	assert wait_for(lambda: len(server.events()) == 100 - dropped), (
		len(server.events()),
		dropped,
		transport.pending(),
		transport.Losses.Counters,
	)


def test_the_memory_bound_holds_while_every_sender_waits_on_a_silent_endpoint(server):
	"""Endpoint accepts and never answers: what capture hands over is still prepared at once and the byte bound
	applies (before, envelopes piled up unserialized, several times their compressed size, up to 10,000)."""
	server.Delay = 30.0  # longer than the test: every request in flight waits
	transport = start(server, queue_max_size=20_000, max_concurrent_requests=1, request_timeout=30.0)
	sentry_sdk.capture_message("first")
	assert wait_for(lambda: transport.pending() == 1 and not transport._incoming)  # the one sender is waiting
	time.sleep(0.3)
	for i in range(300):
		sentry_sdk.capture_message("m{}".format(i), extras={"pad": os.urandom(300).hex()})
	assert wait_for(lambda: transport.Losses.Counters["captured"] == 301, timeout=20), transport.Losses.Counters
	assert transport.Losses.Counters["dropped_queue_full"] > 0
	assert transport.QueuedBytes <= 20_000 and not transport._incoming


def test_rejected_warnings_at_most_once_a_minute_per_reason():
	clock = [1000.0]
	losses = losses_module.Losses(clock=lambda: clock[0])
	records = []
	handler = logging.Handler()
	handler.emit = records.append
	losses_module.L.addHandler(handler)
	try:
		for _ in range(5):
			losses.dropped("rejected_400")
		losses.dropped("queue_full")
		clock[0] += 61
		losses.dropped("rejected_400")
	finally:
		losses_module.L.removeHandler(handler)
	said = [r.getMessage() for r in records]
	assert said == [
		"1 envelope(s) for Sentry dropped: rejected by Sentry with HTTP 400.",
		"1 envelope(s) for Sentry dropped: the in-memory queue is full ([sentry] queue_max_size).",
		"5 envelope(s) for Sentry dropped: rejected by Sentry with HTTP 400.",
	]


def test_burst_of_1000_then_stop_delivers_all_with_a_20ms_endpoint():
	"""An ASAB job logs 1000 distinct errors and stops; the endpoint answers each request after 20 ms."""
	server = FaultServer(delay=0.02)
	try:
		configure({"sentry": {"data_source_name": server.dsn}})

		async def burst(app):
			for row in range(1000):
				logging.getLogger("importer").error("Row %d rejected", row)

		app = run_app(burst, App)
		assert app.SentryService.Delivery.Losses.Counters["sent"] == 1000
		assert len({e["logentry"]["params"][0] for e in server.events()}) == 1000
	finally:
		server.close()


EXIT_CHILD = r"""
import atexit, socket, sys, threading, time, asab, asab_sentry
T = {}
# Registered before sentry-sdk's atexit hook, so it runs after it: the whole exit is measured.
atexit.register(lambda: print("exit %.2f s after stop()" % (time.monotonic() - T["stop"]), flush=True))
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(100); held = []
threading.Thread(target=lambda: [held.append(srv.accept()) for _ in iter(int, 1)], daemon=True).start()
asab.Config.read_dict({"sentry": {"data_source_name": "http://k@127.0.0.1:%d/1" % srv.getsockname()[1], "shutdown_timeout": "2s"}})
class App(asab.Application):
	def __init__(self):
		super().__init__(args=[])
		self.S = asab_sentry.SentryService(self)
	async def main(self):
		for i in range(20):
			self.S.capture_message("pending %d" % i)
		T["stop"] = time.monotonic()
		self.stop()
App().run()
"""


def test_exit_waits_once_and_says_what_it_dropped():
	"""finalize and sentry-sdk's atexit together wait shutdown_timeout, not twice; one warning names the count."""
	out = subprocess.run([sys.executable, "-c", EXIT_CHILD], capture_output=True, text=True, timeout=60, cwd=REPO)
	(took,) = [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("exit ")]
	said = [line for line in (out.stdout + out.stderr).splitlines() if "not delivered" in line]
	assert len(said) == 1, out.stderr
	assert "20 envelope(s) not delivered" in said[0] and "shutdown_timeout=2s: dropped" in said[0]
	assert took < 2 * 2.0  # waiting twice (finalize, then sentry-sdk's atexit) would take 4 s or more


def test_metrics_through_asab_metrics(server):
	import asab.metrics

	configure({"sentry": {"data_source_name": server.dsn}, "asab:metrics": {"target": ""}})

	async def body(app):
		app.SentryService.capture_message("counted")
		await app.Loop.run_in_executor(None, app.SentryService.Delivery.flush, 5)
		server.Status = 413
		app.SentryService.capture_message("rejected")
		await app.Loop.run_in_executor(None, app.SentryService.Delivery.flush, 5)
		app.SentryService.DeliveryMetrics.update()
		app.Values = dict(app.SentryService.DeliveryMetrics.Counters.Storage["fieldset"][0]["values"])
		app.Queue = dict(app.SentryService.DeliveryMetrics.Queue.Storage["fieldset"][0]["values"])

	class WithMetrics(App):
		def __init__(self):
			super().__init__()
			self.add_module(asab.metrics.Module)
			# The metrics service registered after Sentry's: SentryService looks it up in initialize().

	app = run_app(body, WithMetrics)
	assert app.Values["captured"] == 2 and app.Values["sent"] == 1 and app.Values["retried"] == 0
	assert app.Values["dropped_rejected_413"] == 1
	assert app.Queue == {"items": 0, "bytes": 0}


def test_spotlight_wraps_our_transport_and_the_exit_reaches_it(server, collector):
	"""With [sentry] spotlight, every envelope goes to Spotlight too; the DSN's still goes through our delivery."""
	configure({"sentry": {"data_source_name": server.dsn, "spotlight": collector.url + "/stream"}})

	async def body(app):
		assert type(sentry_sdk.get_client().transport).__name__ == "SpotlightTransport"
		app.SentryService.capture_message("both")

	app = run_app(body)
	# The exit flush went through our delivery (wrapped by Spotlight): delivered before run() returned.
	assert app.SentryService.Delivery.Losses.Counters["sent"] == 1
	assert messages(server) == ["both"]
	assert wait_for(lambda: collector.Collector.Store.count(type="event") == 1)


def test_spotlight_that_does_not_keep_up_is_counted_and_said_once(caplog):
	"""Spotlight's queue is bounded; what it cannot take is counted and said in one line (Sentry unaffected)."""
	import socket

	from sentry_sdk.envelope import Envelope

	from asab_sentry.delivery.spotlight import SpotlightTransport

	silent = socket.socket()  # accepts connections (backlog) and never answers
	silent.bind(("127.0.0.1", 0))
	silent.listen(16)
	try:
		url = "http://127.0.0.1:{}/stream".format(silent.getsockname()[1])
		transport = SpotlightTransport({"dsn": None}, url, None, queue_size=2, timeout=30)
		caplog.set_level(logging.WARNING, logger="asab_sentry")
		for i in range(10):
			envelope = Envelope()
			envelope.add_event({"event_id": "{:032x}".format(i), "message": "m"})
			transport.capture_envelope(envelope)
		assert 7 <= transport.Dropped <= 8  # one in the thread's hands (maybe), two queued
		said = [r.getMessage() for r in caplog.records if "Spotlight" in r.getMessage()]
		assert len(said) == 1 and url in said[0] and "not affected" in said[0]
		transport.kill()
	finally:
		silent.close()


def test_rate_limit_outlasting_the_maximum_age_drops_and_counts(server, caplog):
	server.Status, server.Headers = 429, {"Retry-After": "30"}
	transport = start(server, outbox_max_age=1.0)
	for i in range(3):
		sentry_sdk.capture_message("limited {}".format(i))
	assert wait_for(lambda: transport.Losses.Counters["dropped_rate_limit_expired"] == 3, timeout=20)
	assert transport.pending() == 0 and server.events() == []
	said = delivery_warnings(caplog)
	assert said and "rate limit outlasted their maximum age" in said[0]


def test_retried_until_too_old_then_dropped_and_counted(server):
	transport = start(server, outbox_max_age=1.0, **FAST_RETRY)
	server.down()
	for i in range(3):
		sentry_sdk.capture_message("old {}".format(i))
	assert wait_for(lambda: transport.Losses.Counters["dropped_too_old"] == 3, timeout=20)
	assert transport.Losses.Counters["retried"] >= 1 and transport.pending() == 0
	server.up()
	sentry_sdk.capture_message("fresh")
	server.wait_events(1)
	assert messages(server) == ["fresh"]


def test_a_rejected_client_report_is_not_counted_as_a_lost_envelope(server):
	"""Dropped counters count the service's envelopes; our own client report refused by Sentry is not one."""
	server.Status = 413
	transport = start(server)
	transport.record_lost_event("sample_rate", data_category="error")
	transport.flush(5)
	assert wait_for(lambda: len(server.Requests) == 1)
	transport.flush(5)
	assert not any(name.startswith("dropped_") for name in transport.Losses.Counters)


@pytest.mark.parametrize("size", [0, 1, 511, 512, 4000, 70_000, 1_000_000])
def test_bodies_are_standard_gzip_of_every_size(size):
	import gzip

	from asab_sentry.delivery.transport import gzip_body

	data = os.urandom(size // 2) + b"abc" * (size // 6)
	assert gzip.decompress(gzip_body(data, 6)) == data


def test_exit_with_spotlight_waits_once_and_says_what_spotlight_did_not_get():
	"""
	With Spotlight on, sentry-sdk's atexit flush waited for Spotlight a second shutdown_timeout after finalize
	(4 s and more here), and what Spotlight never got was not said.
	"""
	child = EXIT_CHILD.replace(
		'"shutdown_timeout": "2s"',
		'"shutdown_timeout": "2s", "spotlight": "http://127.0.0.1:%d/stream" % srv.getsockname()[1]',
	)
	assert child != EXIT_CHILD
	out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60, cwd=REPO)
	(took,) = [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("exit ")]
	said = [line for line in (out.stdout + out.stderr).splitlines() if "not shown in Spotlight" in line]
	assert len(said) == 1, out.stderr
	assert "20 envelope(s) not shown in Spotlight" in said[0] and "shutdown_timeout=2s" in said[0]
	assert took < 2 * 2.0  # waiting twice (finalize, then sentry-sdk's atexit) would take 4 s or more


def test_encoded_events_wait_as_bytes_and_those_bytes_are_bounded_too(server):
	"""An event the final pass encoded waits for the preparing thread as its bytes (no event dicts for the
	garbage collector to walk), and at most INCOMING_FACTOR x queue_max_size of them wait uncompressed; the rest
	is counted."""
	from asab_sentry import limits
	from asab_sentry.delivery.transport import INCOMING_FACTOR, Serialized

	transport = DeliveryTransport({"dsn": server.dsn}, DeliveryOptions(queue_max_size=5_000))
	sentry_sdk.init(
		dsn=server.dsn,
		transport=transport,
		default_integrations=False,
		before_send=limits.FinalPass(keep_encoding=True),
	)
	with transport._cond:  # neither the preparing thread nor a sender can take anything meanwhile
		for i in range(100):
			sentry_sdk.capture_message("m{}".format(i), extras={"pad": os.urandom(300).hex()})
		waiting = list(transport._incoming)
		assert waiting and all(isinstance(entry, Serialized) for entry in waiting)
		assert sum(len(entry.data) for entry in waiting) <= INCOMING_FACTOR * 5_000
		dropped_at_intake = transport.Losses.Counters["dropped_queue_full"]
		assert dropped_at_intake == 100 - len(waiting)
	# The rest is compressed and sent, or dropped when the (compressed) queue is full: every one accounted for.
	assert wait_for(lambda: transport.pending() == 0)
	delivered = messages(server)
	assert len(delivered) == 100 - transport.Losses.Counters["dropped_queue_full"] > 0
	assert set(delivered) <= {"m{}".format(i) for i in range(len(waiting))}
