"""Pins the sentry-sdk behaviour the hardening relies on (limits.py, capture.py, tracing.py), so that a
sentry-sdk upgrade that changes it fails here first."""

import sentry_sdk
import sentry_sdk.transport
import sentry_sdk.utils

from asab_sentry import _sdk, limits


class _Keep(sentry_sdk.transport.Transport):
	def __init__(self, options=None):
		super().__init__(options)
		self.Events = []

	def capture_envelope(self, envelope):
		self.Events.extend(item.payload.json for item in envelope.items if item.type == "event")


def test_before_send_sees_the_serialized_event_and_sentry_repr_is_honoured():
	seen = []

	def before_send(event, hint):
		seen.append(event)
		return event

	transport = _Keep()
	sentry_sdk.init(transport=transport, default_integrations=False, before_send=before_send)
	try:
		sentry_sdk.capture_event({"message": "m", "extra": {"bag": limits.Bag({str(i): i for i in range(30)})}})
	finally:
		_sdk.reset()
	(event,) = seen
	# Serialized before before_send: plain dicts, and Bag rendered by its __sentry_repr__ with all 30 keys.
	assert type(event["extra"]["bag"]) is dict and len(event["extra"]["bag"]) == 30


def test_exceptions_from_error_and_current_stacktrace_signatures():
	try:
		raise ValueError("x")
	except ValueError as e:
		_, values = sentry_sdk.utils.exceptions_from_error(
			exc_type=type(e), exc_value=e, tb=e.__traceback__, client_options=None, mechanism={"type": "t"}
		)
	assert values[0]["type"] == "ValueError"
	stack = sentry_sdk.utils.current_stacktrace(include_local_variables=False, max_value_length=100)
	assert stack["frames"][-1]["function"] == "test_exceptions_from_error_and_current_stacktrace_signatures"


def test_span_exit_with_an_exception_overrides_the_status():
	# Why tracing.Measure passes no exception to a span it marks cancelled.
	sentry_sdk.init(transport=_Keep(), default_integrations=False, traces_sample_rate=1.0)
	try:
		transaction = sentry_sdk.start_transaction(name="t")
		transaction.__enter__()
		transaction.set_status("cancelled")
		transaction.__exit__(RuntimeError, RuntimeError("x"), None)
		assert transaction.status == "internal_error"
	finally:
		_sdk.reset()
