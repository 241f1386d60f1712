"""capture_exception / capture_message: what is sent and what they return."""

import logging
import sys

import pytest


@pytest.fixture
def svc(sentry_capture):
	return sentry_capture.application().get_service("asab.SentryService")


def collapse():
	divisor = 0
	return 1 / divisor


def test_capture_exception_returns_event_id(svc, sentry_capture):
	try:
		collapse()
	except ZeroDivisionError as e:
		event_id = svc.capture_exception(e)
	event = sentry_capture.find(exception_type="ZeroDivisionError")
	assert event_id == event["event_id"] and len(event_id) == 32
	(exc,) = event["exception"]["values"]
	assert exc["mechanism"]["handled"] is True
	frame = exc["stacktrace"]["frames"][-1]
	assert frame["function"] == "collapse" and frame["vars"]["divisor"] == "0"
	assert frame["context_line"].strip() == "return 1 / divisor"


def test_capture_exception_without_argument_takes_the_current_one(svc, sentry_capture):
	try:
		raise KeyError("current")
	except KeyError:
		event_id = svc.capture_exception()
	assert sentry_capture.find(exception_type="KeyError")["event_id"] == event_id


def test_capture_exception_with_nothing_to_capture(svc, sentry_capture, caplog):
	assert sys.exc_info()[1] is None
	with caplog.at_level(logging.WARNING):
		assert svc.capture_exception() is None
	assert "no exception" in caplog.text
	assert sentry_capture.events == []


def test_capture_message_default_level_is_info(svc, sentry_capture):
	event_id = svc.capture_message("required_variable was not set")
	event = sentry_capture.find(message="required_variable was not set")
	assert event["level"] == "info" and event["event_id"] == event_id


@pytest.mark.parametrize(
	"given,sent",
	[
		("warning", "warning"),
		("ERROR", "error"),
		("critical", "fatal"),
		("notice", "info"),
		("debug", "debug"),
		# Logging level numbers, as an ASAB developer writes them (they were sent as 'info').
		(logging.WARNING, "warning"),
		(logging.ERROR, "error"),
		(logging.CRITICAL, "fatal"),
		(25, "info"),  # asab.LOG_NOTICE
		(logging.DEBUG, "debug"),
	],
)
def test_capture_message_levels(svc, sentry_capture, given, sent):
	svc.capture_message("leveled", level=given)
	assert sentry_capture.find(message="leveled")["level"] == sent


def test_capture_message_invalid_level_is_sent_as_info_and_reported(svc, sentry_capture, caplog):
	with caplog.at_level(logging.ERROR):
		svc.capture_message("odd level", level="loud")
	assert "capture_message(level='loud') is not a Sentry level" in caplog.text
	assert sentry_capture.find(message="odd level")["level"] == "info"
	assert len(sentry_capture.events) == 1


def test_chained_exceptions(svc, sentry_capture):
	try:
		try:
			collapse()
		except ZeroDivisionError as e:
			raise RuntimeError("wrapped") from e
	except RuntimeError as e:
		svc.capture_exception(e)
	types = [v["type"] for v in sentry_capture.find(exception_type="RuntimeError")["exception"]["values"]]
	assert types == ["ZeroDivisionError", "RuntimeError"]


def test_per_event_scope_data_like_asab_sentry(svc, sentry_capture, caplog):
	"""asab.sentry passed scope keyword arguments through; so do we, with tags validated."""
	with caplog.at_level(logging.ERROR):
		svc.capture_message("custom", fingerprint=["my-group"], tags={"k": "v", "bad key": "x"}, extras={"n": 1})
	event = sentry_capture.find(message="custom")
	assert event["fingerprint"] == ["my-group"]
	assert event["tags"]["k"] == "v" and "bad key" not in event["tags"]
	assert event["extra"]["n"] == 1
	assert "Tag 'bad key' not set" in caplog.text
	try:
		raise OSError("disk")
	except OSError as e:
		svc.capture_exception(e, level="warning", contexts={"disk": {"path": "/data"}})
	event = sentry_capture.find(exception_type="OSError")
	assert event["level"] == "warning" and event["contexts"]["disk"] == {"path": "/data"}
	svc.capture_message("only this one", tags={"once": "yes"})
	svc.capture_message("not tagged")
	assert "once" not in sentry_capture.find(message="not tagged")["tags"]


def test_event_ids_are_version_4_uuids_like_sentry_sdk_makes_and_differ_in_a_forked_child():
	import os
	import uuid

	from asab_sentry import capture

	ids = {capture.new_event_id() for _ in range(2000)}
	assert len(ids) == 2000
	for value in list(ids)[:200]:
		parsed = uuid.UUID(hex=value)
		assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122
	read, write = os.pipe()
	pid = os.fork()
	if pid == 0:  # the child: its next id, to the parent
		os.write(write, capture.new_event_id().encode())
		os._exit(0)
	os.close(write)
	os.waitpid(pid, 0)
	child = os.read(read, 64).decode()
	os.close(read)
	assert child != capture.new_event_id() and len(child) == 32
