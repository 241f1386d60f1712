"""
The log handler's shortest path: breadcrumbs whose message is formatted on first read, and breadcrumbs reused once
the scope dropped them and nothing else holds them. The events must be those sentry-sdk alone would make.
"""

import logging

import sentry_sdk

from asab_sentry import breadcrumbs as breadcrumbs_module
from asab_sentry import speed, testing
from test_performance import CONFIG, events_of

L = logging.getLogger("tests.reuse")
ACCESS = logging.getLogger("asab.web.al")


def test_reused_breadcrumbs_carry_each_records_own_content():
	"""Breadcrumbs built and serialized for one event (and changed there), dropped, then reused for records of another
	shape (no extra data, other loggers, other arguments): nothing of the earlier record may show in the next events.
	Both scopes that keep log breadcrumbs: the isolation scope, and the global scope for asab's access log."""

	def story(svc):
		for n in range(150):
			L.info("user %s logged in", "alice{}".format(n), extra={"attempt": n})
			ACCESS.info("", struct_data={"al.m": "GET", "al.p": "/users/{}".format(n), "al.c": 200, "D": 0.01})
		svc.capture_message("first")  # builds and serializes the 200 kept
		for scope in (sentry_sdk.get_isolation_scope(), sentry_sdk.get_global_scope()):
			kept = scope._breadcrumbs
			for index in range(len(kept)):
				kept[index]["note"] = "added to this breadcrumb only"  # (no reference kept)
			del kept
		for n in range(150):
			ACCESS.info("", struct_data={"al.m": "POST", "al.p": "/orders/{}".format(n), "al.c": 503})
			logging.getLogger("tests.other{}".format(n % 2)).warning("stock %d of %s is %.1f", n, "bolts", n / 3)
		svc.capture_message("second")
		L.info("one more %s %s %s", None, True, 2.5)
		svc.capture_message("third")

	fast = events_of(True, story)
	plain = events_of(False, story)
	assert fast == plain
	second = fast[1]["breadcrumbs"]["values"]
	assert len(second) == 200  # 100 of the isolation scope, 100 of the access log (global scope)
	assert {c["category"] for c in second} == {"asab.web.al", "tests.other0", "tests.other1"}
	access = [c for c in second if c["category"] == "asab.web.al"]
	assert len(access) == 100
	assert all(c["type"] == "http" and c["data"]["method"] == "POST" and c["level"] == "error" for c in access)
	assert not any("attempt" in c.get("data", {}) or "note" in c for c in second)
	assert fast[2]["breadcrumbs"]["values"][-1]["message"] == "one more None True 2.5"


def test_breadcrumbs_are_reused_once_dropped():
	"""The reuse happens (what the events test above checks would otherwise never be exercised)."""
	assert speed.ENABLED and breadcrumbs_module._REUSE
	with testing.capture_sentry(CONFIG) as capture:
		capture.application()
		logging.getLogger().setLevel(logging.INFO)
		for n in range(100):
			L.info("first %d", n)
		kept = sentry_sdk.get_isolation_scope()._breadcrumbs
		first = {id(crumb) for crumb in kept}
		for n in range(100):
			L.info("second %d", n)
		assert {id(crumb) for crumb in kept} == first
		assert [crumb["message"] for crumb in kept] == ["second {}".format(n) for n in range(100)]


def test_a_breadcrumb_something_still_holds_is_not_reused():
	"""A breadcrumb the scope dropped but a user (or an event being prepared, or a forked scope) still holds keeps
	its content."""
	with testing.capture_sentry(CONFIG) as capture:
		capture.application()
		logging.getLogger().setLevel(logging.INFO)
		for n in range(100):
			L.info("held %d", n)
		held = list(sentry_sdk.get_isolation_scope()._breadcrumbs)
		unbuilt = held[50]
		for n in range(300):
			L.info("later %d", n)
		assert [crumb["message"] for crumb in held] == ["held {}".format(n) for n in range(100)]
		assert unbuilt["category"] == "tests.reuse"


def test_a_forked_scope_keeps_its_breadcrumbs():
	with testing.capture_sentry(CONFIG) as capture:
		capture.application()
		logging.getLogger().setLevel(logging.INFO)
		for n in range(100):
			L.info("before the fork %d", n)
		with sentry_sdk.isolation_scope() as forked:
			pass
		for n in range(100):
			L.info("after the fork %d", n)
		assert [crumb["message"] for crumb in forked._breadcrumbs] == [
			"before the fork {}".format(n) for n in range(100)
		]


def test_the_message_is_the_text_at_the_time_of_the_call():
	"""Plain arguments are formatted on first read (the same text); others (a list, a dict, an object whose text can
	change) when the record is logged; a template that does not fit its arguments is kept unformatted."""

	class Counter:
		def __init__(self):
			self.n = 0

		def __str__(self):
			return "counter={}".format(self.n)

	def story(svc):
		items = ["a"]
		counter = Counter()
		L.info("items %s", items)
		L.info("%(who)s did %(what)s", {"who": "bob", "what": items})
		L.info("counter %s", counter)
		L.info("plain %s %d %r %.2f %s %s", "s", 7, "r", 1.234, None, False)
		L.info("too few %s %s", 1)
		L.info("no arguments, 100%")
		items.append("b")
		counter.n = 5
		svc.capture_message("now")

	fast = events_of(True, story)
	plain = events_of(False, story)
	assert fast == plain
	messages = [c["message"] for c in fast[0]["breadcrumbs"]["values"]]
	assert messages == [
		"items ['a']",
		"bob did ['a']",
		"counter counter=0",
		"plain s 7 'r' 1.23 None False",
		"too few %s %s",
		"no arguments, 100%",
	]


def _sentry_handler():
	from asab_sentry.logging import SentryLogHandler

	return next(h for h in logging.getLogger().handlers if isinstance(h, SentryLogHandler))


def test_a_filter_put_straight_into_the_handlers_filters_is_applied():
	"""``handler.filters`` is a plain list that code may change without ``addFilter`` (``handler.filters.append(f)``,
	``handler.filters = [...]``): the shortcut must still run the filters, as `logging.Handler.handle` does."""

	def story(svc):
		handler = _sentry_handler()
		handler.filters.append(lambda record: "secret" not in record.getMessage())
		L.info("a secret of %s", "alice")
		L.info("public")
		handler.filters = []
		L.info("another secret")
		svc.capture_message("now")

	fast = events_of(True, story)
	plain = events_of(False, story)
	assert fast == plain
	assert [c["message"] for c in fast[0]["breadcrumbs"]["values"]] == ["public", "another secret"]


class _PrefixedRecord(logging.LogRecord):
	"""A record factory's record whose text depends on when it is formatted (a prefix of the current request)."""

	def getMessage(self):
		return "[{}] {}".format(_request[0], super().getMessage())


_request = ["none"]


def test_a_record_subclass_message_is_its_get_message_at_the_time_of_the_call():
	"""A record of a `logging.setLogRecordFactory` class formats its message its own way (``getMessage``), possibly
	from state that changes: the breadcrumb's message is its ``getMessage()`` at the time of the log call, with or
	without arguments, as sentry-sdk would keep it."""

	def story(svc):
		previous = logging.getLogRecordFactory()
		logging.setLogRecordFactory(_PrefixedRecord)
		try:
			_request[0] = "req-1"
			L.info("no arguments")
			L.info("plain %s %d", "x", 1)
			_request[0] = "req-2"
			L.info("later")
			_request[0] = "req-3"
		finally:
			logging.setLogRecordFactory(previous)
		svc.capture_message("now")

	fast = events_of(True, story)
	plain = events_of(False, story)
	assert fast == plain
	messages = [c["message"] for c in fast[0]["breadcrumbs"]["values"]]
	assert messages == ["[req-1] no arguments", "[req-1] plain x 1", "[req-2] later"]


IMPORTED_UNDER_A_TRACER = r"""
import sys

def tracer(frame, event, arg):  # a debugger or a tracing tool that looks at the frames' variables
	frame.f_locals
	return tracer

sys.settrace(tracer)
sys.setprofile(tracer)
import asab_sentry.breadcrumbs  # (imported while traced: a debugger attached at start-up, then detached)
sys.settrace(None)
sys.setprofile(None)

import logging
import sentry_sdk
from asab_sentry import testing

L = logging.getLogger("tests.reuse")
with testing.capture_sentry({"sentry:logging": {"breadcrumbs": "info"}}) as capture:
	capture.application()
	logging.getLogger().setLevel(logging.INFO)
	for n in range(100):
		L.info("before the fork %d", n)
	with sentry_sdk.isolation_scope() as forked:
		pass
	for n in range(100):
		L.info("after the fork %d", n)
	kept = [crumb["message"] for crumb in forked._breadcrumbs]
	print(kept == ["before the fork {}".format(n) for n in range(100)], kept[:2])
"""


def test_reuse_is_decided_alike_when_the_module_was_imported_under_a_tracer():
	"""What `sys.getrefcount` says of a breadcrumb nothing else holds is measured once, at import: a trace or profile
	function that reads the frames' variables (a debugger, a tracing tool) holds one reference more there. Measured
	so, a breadcrumb one other thing still held (a forked scope) passed for one nothing held, and was reused."""
	import os
	import subprocess
	import sys

	src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
	env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
	result = subprocess.run(
		[sys.executable, "-c", IMPORTED_UNDER_A_TRACER], capture_output=True, text=True, timeout=120, env=env
	)
	assert result.returncode == 0, result.stderr[-2000:]
	assert result.stdout.splitlines()[-1].startswith("True"), result.stdout[-2000:]
