"""
An error storm must not make the garbage collector stall the event loop: what the capture path keeps from one
error to the next adds as few objects as possible to what the collector's full collections walk.

(Whether a full collection happens is measured in benchmarks/, as the loop's lag; these tests check the
structures that decide it, which do not depend on timing.)
"""

import gc
import json
import logging
import os
import subprocess
import sys

import asab
import sentry_sdk
import sentry_sdk.transport

import asab_sentry
from asab_sentry import _sdk, breadcrumbs, limits

L = logging.getLogger("tests.loop_gc")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class KeepsNothing(sentry_sdk.transport.Transport):
	"""A transport that drops every envelope without looking at it (as a custom or test transport may)."""

	def capture_envelope(self, envelope):
		pass


def innermost(table, depth):
	row = {"id": depth, "table": table}  # noqa: F841
	raise KeyError(table)


def middle(table):
	attempts = [1, 2, 3]  # noqa: F841
	innermost(table, len(table))


def storm(count: int) -> None:
	for n in range(count):
		try:
			middle("users")
		except KeyError:
			L.exception("request %d failed", n)


def service() -> asab_sentry.SentryService:
	asab.Config.read_dict({"sentry": {"data_source_name": "http://key@127.0.0.1:9/1"}})
	svc = asab_sentry.SentryService(asab.Application(args=[]), transport=KeepsNothing())
	assert _sdk.wait_warm_up(timeout=60)
	# Only Sentry's handler: pytest's log capture keeps every record (and its traceback) of the test.
	root = logging.getLogger()
	root.handlers[:] = [h for h in root.handlers if isinstance(h, asab_sentry.logging.SentryLogHandler)]
	root.setLevel(logging.INFO)
	return svc


def measure_growth() -> dict:
	"""Objects the collector tracks, after each of 150 errors in a steady state; run in a fresh interpreter."""
	service()
	storm(150)  # steady state: max_breadcrumbs breadcrumbs (of the earlier errors) pending
	sizes = []
	gc.collect()
	gc.disable()
	try:
		for _ in range(150):
			storm(1)
			sizes.append(len(gc.get_objects()))
	finally:
		gc.enable()
	return {"min": min(sizes), "max": max(sizes), "encoded": len(limits._encoded)}


def test_what_one_logged_error_leaves_in_memory_does_not_pile_up_from_error_to_error():
	"""
	The encoding the final pass keeps for the transport is one per thread: an event nobody takes (a transport
	that never asks, an event sampled out) is let go at the thread's next event. Kept by the dozen, events lived
	long enough to be promoted to the oldest generation and made full collections frequent in a storm.

	Counted in a fresh interpreter: threads that earlier tests of the session leave behind (servers, spotlight
	retries) allocate while the collector is off and would be counted here.
	"""
	env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
	out = subprocess.run(
		[sys.executable, "-c", "import json, tests.test_loop_gc as t; print(json.dumps(t.measure_growth()))"],
		cwd=ROOT,
		env=env,
		capture_output=True,
		text=True,
		timeout=300,
	)
	assert out.returncode == 0, out.stderr[-3000:]
	result = json.loads(out.stdout.strip().splitlines()[-1])
	# One event (and its encoding) replaces the previous one; its breadcrumb replaces the oldest one; the final
	# pass forgets the breadcrumbs that left the scope every 32 events.
	assert result["max"] - result["min"] < 150, result
	assert result["encoded"] == 1


def own_tracked_objects(crumbs: list) -> list[int]:
	"""
	For each breadcrumb, the GC-tracked data objects (dicts, lists, tuples, sets) reachable from it through data
	objects and from no other breadcrumb, itself included.
	"""
	reached = []
	for crumb in crumbs:
		seen = {id(crumb): crumb}
		todo = [crumb]
		while todo:
			for child in gc.get_referents(todo.pop()):
				if gc.is_tracked(child) and id(child) not in seen and isinstance(child, (dict, list, tuple, set)):
					seen[id(child)] = child
					todo.append(child)
		reached.append(seen)
	counts = {}
	for seen in reached:
		for key in seen:
			counts[key] = counts.get(key, 0) + 1
	return [sum(1 for key in seen if counts[key] == 1) for seen in reached]


def test_a_log_breadcrumb_that_has_been_in_an_event_holds_two_objects_the_collector_tracks():
	"""The breadcrumb itself and its serialized dict: its data (when empty) and its cache add none."""
	service()
	for n in range(20):
		L.info("user %s logged in", n)
	storm(1)  # serializes the pending breadcrumbs into the event
	crumbs = [c for c in sentry_sdk.get_isolation_scope()._breadcrumbs if isinstance(c, breadcrumbs.LogBreadcrumb)]
	assert len(crumbs) == 21
	assert own_tracked_objects(crumbs[:20]) == [2] * 20
	# Data of its own (``extra``) is kept as it is: one more.
	L.info("user logged in", extra={"user": "alice"})
	storm(1)
	crumb = sentry_sdk.get_isolation_scope()._breadcrumbs[-2]
	assert crumb["data"] == {"user": "alice"}
	assert own_tracked_objects([crumb, crumbs[0]])[0] == 3


def test_the_first_events_one_off_work_is_done_at_start_off_the_event_loop(monkeypatch):
	"""
	sentry-sdk reads the metadata of every installed distribution for the first event (``modules``); the service
	does it at start in a background thread, so that the first error does not pay it on the event loop.
	"""
	import threading
	import time

	import sentry_sdk.utils

	monkeypatch.setattr(sentry_sdk.utils, "_installed_modules", None)
	asab.Config.read_dict({"sentry": {"data_source_name": "http://key@127.0.0.1:9/1"}})
	events = []
	asab_sentry.SentryService(asab.Application(args=[]), transport=KeepsNothing())
	assert threading.current_thread() is threading.main_thread()
	deadline = time.monotonic() + 60
	while sentry_sdk.utils._installed_modules is None and time.monotonic() < deadline:
		time.sleep(0.01)
	# Without any event, in another thread: the same list sentry-sdk would compute.
	assert sentry_sdk.utils._installed_modules == dict(sentry_sdk.utils._generate_installed_modules())
	assert "asab" in sentry_sdk.utils._installed_modules
	sentry_sdk.get_global_scope().add_event_processor(lambda event, hint: events.append(event) or event)
	storm(1)
	assert events[0]["modules"] is sentry_sdk.utils._installed_modules


def test_a_log_breadcrumb_changed_after_an_event_carried_it_is_sent_as_changed(sentry_capture):
	svc = sentry_capture.application().get_service("asab.SentryService")
	logging.getLogger().setLevel(logging.INFO)
	L.info("user %s logged in", "alice")
	svc.capture_message("first")
	crumb = next(c for c in sentry_sdk.get_isolation_scope()._breadcrumbs if c.get("category") == L.name)
	crumb["message"] = "changed"
	svc.capture_message("second")
	first, second = sentry_capture.events
	assert [c["message"] for c in first["breadcrumbs"]["values"] if c["category"] == L.name] == ["user alice logged in"]
	assert [c["message"] for c in second["breadcrumbs"]["values"] if c["category"] == L.name] == ["changed"]


class ChangedMeanwhile(breadcrumbs.LogBreadcrumb):
	"""A breadcrumb that another thread changes at the moment `restore` first reads its serialized form."""

	__slots__ = ("Changes",)

	def __getattribute__(self, name):
		if name == "_value" and object.__getattribute__(self, "Changes"):
			self.Changes -= 1
			self["message"] = "changed"  # what another thread does, at the worst moment
		return object.__getattribute__(self, name)


def test_breadcrumbs_are_restored_complete_when_one_is_changed_by_another_thread_meanwhile():
	"""`restore` reads the serialized forms after checking them: a change in between (another thread) is redone."""
	asab.Config.read_dict({"sentry": {"data_source_name": "http://key@127.0.0.1:9/1"}})
	asab_sentry.SentryService(asab.Application(args=[]), transport=KeepsNothing())
	options = sentry_sdk.get_client().options
	record = logging.LogRecord("tests.loop_gc", logging.INFO, __file__, 1, "one %s", ("x",), None)
	crumb = ChangedMeanwhile(record, "one x", asab_sentry.logging.breadcrumb_from_record)
	crumb.Changes = 0
	crumb.serialized(options)
	crumb.Changes = 1
	event = breadcrumbs.restore({}, {breadcrumbs._STASH: [crumb]})
	assert crumb.Changes == 0
	[sent] = event["breadcrumbs"]["values"]
	assert sent["message"] == "changed" and sent["category"] == "tests.loop_gc"
