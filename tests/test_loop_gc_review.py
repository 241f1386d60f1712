"""Review of the error-storm work (issue 11, loop side): attacks on what it changed."""

import logging

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
