"""Review of the error-storm work (issue 11, loop side): attacks on what it changed."""

import logging
import threading

import sentry_sdk

L = logging.getLogger("tests.loop_gc_review")


def test_a_before_breadcrumb_hook_adding_many_keys_to_a_records_empty_data_has_them_all_sent(sentry_capture):
	"""
	A log breadcrumb's data is a `limits.Bag` (every key kept, not sentry-sdk's 10-key trim), also when the record
	had none and a ``before_breadcrumb`` callback fills it.
	"""
	svc = sentry_capture.application().get_service("asab.SentryService")
	logging.getLogger().setLevel(logging.INFO)

	def enrich(crumb, hint):
		for n in range(15):
			crumb["data"]["key{}".format(n)] = n
		return crumb

	sentry_sdk.get_client().options["before_breadcrumb"] = enrich
	svc.LogHandler.LazyBreadcrumbs = False  # as with a callback set before the handler was made
	L.info("plain")
	L.info("with data", extra={"user": "alice"})
	svc.capture_message("boom")
	[event] = sentry_capture.events
	crumbs = [c for c in event["breadcrumbs"]["values"] if c["category"] == L.name]
	assert [len(c["data"]) for c in crumbs] == [15, 16]


def crumb_of(message):
	return next(c for c in sentry_sdk.get_isolation_scope()._breadcrumbs if c.get("message") == message)


def messages(event):
	return [c["message"] for c in event["breadcrumbs"]["values"] if c["category"] == L.name]


def test_a_log_breadcrumb_changed_with_any_dict_method_is_sent_as_changed(sentry_capture):
	"""
	``|=``, ``clear()`` and ``popitem()`` change a log breadcrumb like ``[key] = value`` does: before an event
	carried it (the change is not overwritten when it is built) and after (its serialized form is made again).
	"""
	svc = sentry_capture.application().get_service("asab.SentryService")
	logging.getLogger().setLevel(logging.INFO)
	L.info("one")
	L.info("two")
	crumb_of("one").__ior__({"message": "one, changed before any event"})
	svc.capture_message("first")
	crumb_of("two").__ior__({"message": "two, changed"})
	svc.capture_message("second")
	crumb = crumb_of("two, changed")
	crumb.clear()
	crumb.update({"type": "log", "category": L.name, "message": "two, cleared and refilled"})
	svc.capture_message("third")
	crumb = crumb_of("two, cleared and refilled")
	while crumb.popitem()[0] != "message":
		pass
	svc.capture_message("fourth")
	first, second, third, fourth = sentry_capture.events
	assert messages(first) == ["one, changed before any event", "two"]
	assert messages(second) == ["one, changed before any event", "two, changed"]
	assert messages(third) == ["one, changed before any event", "two, cleared and refilled"]
	assert [c.get("message") for c in fourth["breadcrumbs"]["values"] if c.get("category") == L.name] == [
		"one, changed before any event",
		None,
	]


class ChangesTheBreadcrumbWhileSerialized:
	"""A value whose repr (sentry-sdk's serializer asks for it) lets another thread change the breadcrumb."""

	def __init__(self):
		self.Crumb = None
		self.Changer = None

	def __repr__(self):
		if self.Crumb is not None and self.Changer is None:
			crumb = self.Crumb
			self.Changer = threading.Thread(target=crumb.__setitem__, args=("message", "changed meanwhile"))
			self.Changer.start()
			self.Changer.join(0.5)  # done at once, unless it waits for this serialization to end
		return "<value>"


def test_a_log_breadcrumb_changed_by_another_thread_while_an_event_serializes_it_is_sent_changed_later(
	sentry_capture,
):
	"""
	The serialization of a breadcrumb for one event and a change of it in another thread do not overlap: the
	serialized form kept is never the one of the content before a change (it would be sent in every later event).
	"""
	svc = sentry_capture.application().get_service("asab.SentryService")
	logging.getLogger().setLevel(logging.INFO)
	value = ChangesTheBreadcrumbWhileSerialized()
	L.info("as logged", extra={"value": value})
	value.Crumb = next(c for c in sentry_sdk.get_isolation_scope()._breadcrumbs if c.get("category") == L.name)
	svc.capture_message("first")
	value.Changer.join(30)
	svc.capture_message("second")
	first, second = sentry_capture.events
	assert messages(first) in (["as logged"], ["changed meanwhile"])
	assert messages(second) == ["changed meanwhile"]


class NoThreads(threading.Thread):
	"""The warm-up thread cannot be started (a container's limit of threads or processes reached)."""

	def start(self):
		if self.name == "asab-sentry-warm-up":
			raise RuntimeError("can't start new thread")
		super().start()


def test_a_service_starts_and_reports_when_the_warm_up_thread_cannot_be_started(monkeypatch):
	"""The warm-up is an optimisation: without it the first event computes the installed modules, as before."""
	import asab
	import sentry_sdk.utils

	import asab_sentry
	from asab_sentry import _sdk, testing

	monkeypatch.setattr(sentry_sdk.utils, "_installed_modules", None)
	monkeypatch.setattr(_sdk.threading, "Thread", NoThreads)
	with testing.capture_sentry() as capture:
		app = capture.application(asab.Application)
		svc = app.get_service("asab.SentryService")
		assert isinstance(svc, asab_sentry.SentryService)
		svc.capture_message("first")
	[event] = capture.events
	assert event["modules"] == dict(sentry_sdk.utils._generate_installed_modules())
