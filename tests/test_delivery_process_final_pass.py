"""
With ``[sentry] delivery = process`` the delivery process finishes the final pass of error events (scrubbing, text
repair, Sentry's size limits, the encoding: `limits.FinalPass.finish`), off the service's event loop. What reaches
Sentry is byte for byte what the service would have sent had it done the pass itself (real helper process, real
HTTP on 127.0.0.1: tests/faultserver.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import threading

import asab
import pytest
import sentry_sdk

import asab_sentry
from asab_sentry import limits
from asab_sentry.delivery import DeliveryOptions
from asab_sentry.delivery import process as process_module
from asab_sentry.delivery import transport as transport_module
from asab_sentry.delivery.process import ProcessDelivery
from faultserver import FaultServer
from helpers import App, configure, run_app
from test_delivery_process import wait_for

L = logging.getLogger("orders")

#: Values that differ from one capture to the next: ids, times, addresses.
VOLATILE = [
	(re.compile(rb'"(event_id|trace_id|span_id|parent_span_id|sample_rand)":("[^"]*"|null)'), rb'"\1":"-"'),
	(re.compile(rb'"(timestamp|sent_at)":"[^"]*"'), rb'"\1":"-"'),
	(re.compile(rb'"(timestamp)":[0-9.]+'), rb'"\1":0'),
	(re.compile(rb"0x[0-9a-f]+"), b"0x-"),
	(re.compile(rb'"length":[0-9]+'), b'"length":0'),
]


def captured(body: bytes) -> str:
	return json.loads(body.split(b"\n")[2])["timestamp"]


def normalized(body: bytes) -> bytes:
	for pattern, replacement in VOLATILE:
		body = pattern.sub(replacement, body)
	return body


@pytest.fixture
def server():
	s = FaultServer()
	try:
		yield s
	finally:
		sentry_sdk.get_client().close(timeout=0.5)
		s.close()


@pytest.fixture
def passes_here(monkeypatch) -> list[dict]:
	"""The events whose final pass ran in this process (`limits.FinalPass.process`), as they came to it."""
	seen: list[dict] = []
	process = limits.FinalPass.process

	def counted(self, event):
		seen.append(event)
		return process(self, event)

	monkeypatch.setattr(limits.FinalPass, "process", counted)
	return seen


def kinds(events: list[dict]) -> list[str]:
	return [event.get("type", "error") for event in events]


def texts(events: list[dict]) -> list[str]:
	return [event.get("logentry", {}).get("formatted", "") for event in events]


def clear_breadcrumbs() -> None:
	for scope in (sentry_sdk.get_global_scope(), sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()):
		scope.clear_breadcrumbs()


def order_failed(order_id: int, password: str) -> None:
	card = {"number": "4111", "cvv_token": "1" + "23", "items": list(range(5))}  # noqa: F841
	raise KeyError("order {}".format(order_id))


def scenario() -> None:
	"""Error events of every shape the final pass changes: secrets, breadcrumbs, bad text, over the size limit."""
	for n in range(12):
		L.info("step %d", n, extra={"session_token": "s3" + "cr3t-{}".format(n), "row": n})
	try:
		order_failed(7, "hun" + "ter2")  # (the source lines are in the event: the secret itself is not)
	except KeyError:
		L.exception("Order %d failed", 7)
	L.error("Broken text \udc80 from %s", "a socket", extra={"api_key": "k" + "-1"})
	with sentry_sdk.new_scope() as scope:
		scope.set_tag("csrf", "tag" + "-secret")
		scope.set_user({"id": "u1", "password": "user" + "-secret"})
		scope.set_context("payment", {"cvv": "000", "authorization": "Bearer " + "zzz"})
		scope.set_extra("argv_like", ["--password", "p"])
		sentry_sdk.capture_message("with a scope full of secrets")
	for n in range(3):  # the breadcrumbs of the events before are packed once each, and so on
		L.warning("Retry %d", n, extra={"row": n})
	L.error("Gave up after %d retries", 3)
	# Last: its line about the trimming becomes a breadcrumb, said by the service or (later) by the delivery process.
	L.error("An enormous event: %s", "y" * 1_200_000)  # over Sentry's 1 MB


def test_the_delivery_process_finishes_error_events_as_the_service_would(server, caplog, passes_here):
	configure(
		{
			"sentry": {
				"data_source_name": server.dsn,
				"delivery": "process",
				# A term that also filters the trace's dynamic sampling context, which goes into the envelope's header.
				"scrub_keys": "release, row",
				"max_value_length": "2000000",
			}
		}
	)
	bodies: dict[bool, list[bytes]] = {}

	async def body(app):
		final_pass = limits._active[0]
		assert final_pass.Defer is True  # delivery = process, no Spotlight
		loop = asyncio.get_running_loop()
		# (Not deferred first: once events were deferred, an error event the pass did not encode is passed again by the
		# transport, see `limits.fill_encoded`; the scenario's events are such, and that pass would be counted.)
		for defer in (False, True):
			final_pass.Defer = defer
			clear_breadcrumbs()
			del passes_here[:]
			before = len(server.Bodies)
			scenario()
			await loop.run_in_executor(None, sentry_sdk.flush, 30)

			def events(before=before):
				return [b for b in server.Bodies[before:] if b'"type":"event"' in b]

			assert wait_for(lambda: len(events()) >= 5)
			bodies[defer] = events()
			# Deferred: no error event's pass ran in the service; else each did.
			assert kinds(passes_here) == ([] if defer else ["error"] * 5)
			assert wait_for(lambda: any("over Sentry's size limit" in r.getMessage() for r in caplog.records))
			caplog.clear()

	app = run_app(body, App)
	assert isinstance(app.SentryService.Delivery, ProcessDelivery)
	# (in the order they were captured: the concurrent requests may arrive in another)
	deferred, here = sorted(bodies[True], key=captured), sorted(bodies[False], key=captured)
	assert len(deferred) == len(here) == 5
	assert [normalized(b) for b in deferred] == [normalized(b) for b in here]
	# What the pass does is in them: secrets filtered (the header's sampling context too), text repaired, trimmed.
	everything = b"".join(deferred)
	for secret in (b"hunter2", b"s3cr3t", b'cvv_token":"123', b"k-1", b"tag-secret", b"user-secret", b"zzz"):
		assert secret not in everything
	assert b'"release":"[Filtered]"' in deferred[0].split(b"\n")[0]
	texts = [json.loads(b.split(b"\n")[2]).get("logentry", {}).get("formatted", "") for b in deferred]
	assert "Broken text \ufffd from a socket" in texts
	assert max(map(len, deferred)) < limits.MAX_EVENT_BYTES
	enormous = json.loads(deferred[-1].split(b"\n")[2])
	assert enormous["contexts"]["asab_sentry"]["original_size"] > limits.MAX_EVENT_BYTES, enormous["contexts"]
	# The delivery process's line about the trimmed event reached the service's log (waited for above).


def test_deferred_events_are_finished_by_the_service_when_the_delivery_process_cannot_run(server, caplog, monkeypatch):
	"""The in-process fallback finishes what the delivery process would have: nothing leaves unscrubbed."""
	# It reads nothing and ends after a while: what was written into its pipe is put back and finished here.
	code = "import time; time.sleep(1); raise SystemExit(3)"
	monkeypatch.setattr(process_module, "_child_command", lambda root: [sys.executable, "-c", code])
	finished_here = []
	finished = transport_module.finished

	def counted(entry):
		finished_here.append(type(entry).__name__)
		return finished(entry)

	monkeypatch.setattr(transport_module, "finished", counted)
	configure({"sentry": {"data_source_name": server.dsn, "delivery": "process"}})

	async def body(app):
		assert limits._active[0].Defer is True
		for i in range(20):  # some written to the pipe of the process that ends, the others after the fallback
			try:
				order_failed(i, "hun" + "ter2")
			except KeyError:
				L.exception("Order %d failed", i)
			await asyncio.sleep(0.02)
		await asyncio.get_running_loop().run_in_executor(None, sentry_sdk.flush, 30)

	app = run_app(body, App)
	assert app.SentryService.Delivery.Fallback is not None
	assert limits._active[0].Defer is False  # the service's final pass does them at once again
	assert "Unfinished" in finished_here
	assert wait_for(lambda: len(server.events()) >= 20)
	events = server.events()
	assert sorted(e["logentry"]["params"][0] for e in events) == list(range(20))
	for event in events:
		frame = event["exception"]["values"][0]["stacktrace"]["frames"][-1]
		assert frame["vars"]["password"] == "[Filtered]"
	assert b"hunter2" not in b"".join(server.Bodies)


def test_with_spotlight_the_service_finishes_every_event(server):
	"""Spotlight shows the events the service sends: their pass is done in the service."""
	configure(
		{"sentry": {"data_source_name": server.dsn, "delivery": "process", "spotlight": "http://127.0.0.1:9/stream"}}
	)

	async def body(app):
		assert limits._active[0].Defer is False

	run_app(body, App)


def test_a_deferred_event_whose_packed_form_was_let_go_is_finished_by_the_service(server):
	"""
	The packed events kept for the transport are bounded (`limits._MAX_ENCODED_BYTES`): another thread's big event
	may let go of one between its ``before_send`` and its transport. That event is never sent as it came.
	"""
	configure({"sentry": {"data_source_name": server.dsn, "delivery": "process", "max_value_length": "6000000"}})
	big = logging.getLogger("big")
	blob = "z" * (limits._MAX_ENCODED_BYTES + 100_000)

	def sampler(event, hint):
		# sentry-sdk asks after before_send, in the capturing thread: where another thread's event may come.
		if event.get("logger") == "big":
			return 0.0  # (sampled out: its packed form stays kept, and the bound is reached)
		other = threading.Thread(target=big.error, args=("huge %s", blob))
		other.start()
		other.join()
		return 1.0

	async def body(app):
		assert limits._active[0].Defer is True
		sentry_sdk.get_client().options["error_sampler"] = sampler
		try:
			order_failed(7, "hun" + "ter2")
		except KeyError:
			L.exception("Order %d failed", 7)
		await asyncio.get_running_loop().run_in_executor(None, sentry_sdk.flush, 30)

	run_app(body, App)
	assert wait_for(lambda: len(server.events()) >= 1)
	(event,) = server.events()
	frame = event["exception"]["values"][0]["stacktrace"]["frames"][-1]
	assert frame["vars"]["card"]["cvv_token"] == "[Filtered]"  # (one sentry-sdk's own scrubber leaves)


def test_a_delivery_process_given_ready_made_does_not_finish_events_without_the_services_scrub_keys(server):
	"""
	A ProcessDelivery made before the service (``transport=``) started its delivery process before ``[sentry]
	scrub_keys`` was configured: the service does the pass itself, with them.
	"""
	configure({"sentry": {"data_source_name": server.dsn, "scrub_keys": "iban"}})
	transport = ProcessDelivery({"dsn": server.dsn, "send_client_reports": True}, DeliveryOptions())

	class Given(App):
		def __init__(self):
			asab.Application.__init__(self, args=[])
			self.SentryService = asab_sentry.SentryService(self, transport=transport)

	async def body(app):
		assert app.SentryService.Delivery is transport
		assert limits._active[0].Defer is False
		L.error("Payment refused", extra={"iban": "CZ65" + "0800"})
		await asyncio.get_running_loop().run_in_executor(None, sentry_sdk.flush, 30)

	run_app(body, Given)
	assert wait_for(lambda: len(server.events()) >= 1)
	(event,) = server.events()
	assert event["extra"]["iban"] == "[Filtered]"


def test_events_in_a_transaction_are_finished_by_the_delivery_process_too(server, passes_here):
	"""
	After ``SentryService.transaction()`` the events carry sentry-sdk's ``TransactionSource`` (a str enum, which
	marshal does not take): still finished by the delivery process, byte for byte as the service would; the
	transaction's name (bad text here) is valid text in the envelope's header too.
	"""
	configure({"sentry": {"data_source_name": server.dsn, "delivery": "process", "traces_sample_rate": "1.0"}})
	bodies: dict[bool, list[bytes]] = {}

	async def body(app):
		final_pass = limits._active[0]
		loop = asyncio.get_running_loop()
		for defer in (False, True):
			final_pass.Defer = defer
			clear_breadcrumbs()
			del passes_here[:]
			before = len(server.Bodies)
			with app.SentryService.transaction("task", "nightly import \udc80"):
				L.error("Import of row %d failed", 1, extra={"api_key": "k" + "-1"})
			await loop.run_in_executor(None, sentry_sdk.flush, 30)

			def events(before=before):
				return [b for b in server.Bodies[before:] if b'"type":"event"' in b]

			assert wait_for(lambda: len(events()) >= 1)
			bodies[defer] = events()
			assert kinds(passes_here) == (["error", "transaction"] if not defer else ["transaction"])

	run_app(body, App)
	assert [normalized(b) for b in bodies[True]] == [normalized(b) for b in bodies[False]]
	event = json.loads(bodies[True][0].split(b"\n")[2])
	assert event["transaction_info"] == {"source": "custom"} and event["extra"]["api_key"] == "[Filtered]"
	assert json.loads(bodies[True][0].split(b"\n")[0])["trace"]["transaction"] == "nightly import \ufffd"


def test_failed_web_requests_are_finished_by_the_delivery_process(server, monkeypatch, passes_here):
	"""
	asab.web logs a failed request with its headers, whose names are multidict's istr (a str subclass, which marshal
	does not take) and become a breadcrumb of the request's event: packed as the text JSON has of them.
	"""
	import asab.web.rest

	from test_web_requests import get_all, not_found, serve

	configure(
		{
			"sentry": {"data_source_name": server.dsn, "delivery": "process"},
			"sentry:web": {"failed_status_codes": "404"},
		}
	)
	bodies: dict[bool, list[bytes]] = {}
	passes: dict[bool, list[str]] = {}

	async def client(session, base, app):
		final_pass = limits._active[0]
		assert final_pass.Defer is True
		loop = asyncio.get_running_loop()
		for defer in (False, True):
			final_pass.Defer = defer
			del passes_here[:]
			before = len(server.Bodies)
			await get_all(session, base, ["/missing"], {"X-Api-Key": "k3y-" + "of-the-caller"})
			await loop.run_in_executor(None, sentry_sdk.flush, 30)

			def events(before=before):
				return [b for b in server.Bodies[before:] if b'"type":"event"' in b]

			assert wait_for(lambda: len(events()) >= 1)
			bodies[defer], passes[defer] = events(), kinds(passes_here)

	serve([("GET", "/missing", not_found)], client, middlewares=[asab.web.rest.JsonExceptionMiddleware])
	assert passes == {False: ["error"], True: []}
	(event,) = (json.loads(b.split(b"\n")[2]) for b in bodies[True])
	crumbs = [c for c in event["breadcrumbs"]["values"] if "X-Api-Key" in c.get("data", {})]
	assert crumbs and all(c["data"]["X-Api-Key"] == "[Filtered]" for c in crumbs)
	assert b"of-the-caller" not in b"".join(bodies[True])


def test_str_subclasses_are_packed_as_the_text_json_has_of_them():
	"""multidict's istr keys, str enums and int enums, with shared breadcrumbs or without: the same JSON."""
	import copy
	import enum

	from multidict import istr

	class Level(enum.IntEnum):
		HIGH = 3

	source = sentry_sdk.tracing.TransactionSource.CUSTOM
	for crumbs in (2, 12):
		event = {
			"level": "error",
			"extra": {istr("X-Api-Key"): "k-1", istr("Accept"): source, "rank": Level.HIGH},
			"contexts": {"trace": {"trace_id": "t", "dynamic_sampling_context": {"transaction": "x"}}},
			"breadcrumbs": {
				"values": [{"message": "m{}".format(n), "data": {istr("Host"): "h"}} for n in range(crumbs)]
			},
		}
		here = limits.FinalPass(keep_encoding=True)
		done = here(copy.deepcopy(event), {})
		done["contexts"]["trace"].pop("dynamic_sampling_context")  # (sentry-sdk moves it into the envelope's header)
		expected = limits.take_encoded(done) or limits.json_dumps(done)
		deferring = limits.FinalPass(keep_encoding=True)
		deferring.Defer = True
		left = deferring(copy.deepcopy(event), {})
		left["contexts"]["trace"].pop("dynamic_sampling_context")
		packed = limits.take_encoded(left)
		assert type(packed) is limits.Deferred, crumbs
		assert limits.FinalPass(keep_encoding=True).finish(packed) == expected
		assert b'"X-Api-Key":"[Filtered]"' in expected


def test_while_the_delivery_process_falls_behind_the_service_finishes_events_itself(server, passes_here):
	"""
	A burst the delivery process cannot finish as fast as it comes: over a queue's worth waiting for it
	(``queue_max_size``), the service does the pass itself (its pace slows the burst, nothing is dropped), and
	leaves it to the delivery process again once less waits.
	"""
	configure(
		{
			"sentry": {"data_source_name": server.dsn, "delivery": "process", "queue_max_size": "300000"},
			"sentry:logging": {"breadcrumbs": "CRITICAL"},  # (each event its own size, not the burst's so far)
		}
	)
	seen = {}

	async def body(app):
		delivery = app.SentryService.Delivery
		final_pass = limits._active[0]
		loop = asyncio.get_running_loop()
		assert await loop.run_in_executor(None, wait_for, lambda: delivery._child is not None and delivery._child.Ready)
		os.kill(delivery.Pid, signal.SIGSTOP)  # it reads nothing meanwhile
		try:
			for n in range(40):  # ~20 KB each: over 300 KB waiting after ~15
				L.error("Burst %d %s", n, "z" * 20000)
			seen["backlogged"] = final_pass.Backlogged
			seen["done here"] = texts(passes_here)
		finally:
			os.kill(delivery.Pid, signal.SIGCONT)
		await loop.run_in_executor(None, sentry_sdk.flush, 30)
		assert await loop.run_in_executor(None, wait_for, lambda: delivery._feed_bytes < 200000)
		del passes_here[:]
		L.error("After %d", 1)  # seen with the backlog gone: the next one is the delivery process's again
		L.error("After %d", 2)
		seen["after"] = texts(passes_here)
		await loop.run_in_executor(None, sentry_sdk.flush, 30)

	app = run_app(body, App)
	assert seen["backlogged"] is True
	# The first ones were left to the delivery process; once a queue's worth waited, the service did the rest.
	assert "Burst 0 " not in " ".join(seen["done here"])[:9] and len(seen["done here"]) >= 20
	assert seen["after"] == ["After 1"]
	assert app.SentryService.Delivery.Losses.Counters["dropped_queue_full"] == 0
	assert len([e for e in server.events() if e["logentry"]["message"].startswith("Burst")]) == 40
	body_text = b"".join(server.Bodies)
	assert body_text.count(b'"formatted":"Burst ') == 40
