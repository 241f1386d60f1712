"""No public method, decorator or context manager raises into application code (D03); a bad argument never
loses the event without a visible line (D04, 06); one line per kind per minute, bounded in length."""

import enum
import logging
import threading

import pytest

from asab_sentry import notices

L = logging.getLogger("tests.never_raise")


class Op(enum.Enum):
	DB = "db"


class BadStr:
	def __str__(self):
		raise RuntimeError("str boom")


class BadReprKey(str):
	def __repr__(self):
		raise RuntimeError("repr boom")


class BadMapping(dict):
	def items(self):
		raise RuntimeError("items boom")


class Detached:
	def __repr__(self):
		raise RuntimeError("instance is not bound to a session")

	def __str__(self):
		return "Detached row #7"


class Unprintable:
	def __repr__(self):
		raise RuntimeError("no repr")

	def __str__(self):
		raise RuntimeError("no str")


@pytest.fixture
def svc(sentry_capture):
	sentry_capture.configure({"sentry": {"traces_sample_rate": "1"}})
	return sentry_capture.application().get_service("asab.SentryService")


def asab_sentry_lines(caplog):
	return [r.getMessage() for r in caplog.records if str(r.name).startswith("asab_sentry")]


def test_transaction_with_non_str_op_and_name(svc, sentry_capture):
	with svc.transaction(Op.DB, "load rows"):
		pass
	with svc.transaction(5, 7.5):
		pass
	with svc.span("x", "y"):  # outside a transaction: nothing
		pass

	@svc.transaction(Op.DB, Op.DB)
	def decorated():
		return "ran"

	assert decorated() == "ran"
	names = sorted((t["contexts"]["trace"]["op"], t["transaction"]) for t in sentry_capture.transactions)
	assert names == [("5", "7.5"), ("db", "db"), ("db", "load rows")]


def test_exit_in_another_thread_and_without_enter(svc, sentry_capture, caplog):
	measure = svc.transaction("task", "handed over")
	measure.__enter__()
	errors = []

	def close():
		try:
			measure.__exit__(None, None, None)
		except BaseException as e:  # pragma: no cover - the failure this test guards against
			errors.append(e)

	thread = threading.Thread(target=close)
	thread.start()
	thread.join()
	assert errors == []
	assert sentry_capture.find(type="transaction")["transaction"] == "handed over", "finished by the other thread"
	with caplog.at_level(logging.WARNING, logger="asab_sentry"):
		svc.span("a", "b").__exit__(None, None, None)
	assert any("exited without being entered" in line for line in asab_sentry_lines(caplog))


def test_decorating_something_not_callable(svc, caplog):
	with caplog.at_level(logging.ERROR, logger="asab_sentry"):
		assert svc.transaction("a", "b")(42) == 42
	assert any("not a function" in line for line in asab_sentry_lines(caplog))


def test_set_tag_and_friends_with_hostile_values(svc, sentry_capture, caplog):
	with caplog.at_level(logging.ERROR, logger="asab_sentry"):
		svc.set_tag("k", 10**5000)
		svc.set_context(BadStr(), {})
		svc.set_context("ok", BadMapping(a=1))
		svc.set_tags(BadMapping(a="b"))
		svc.set_tag(BadReprKey("bad key"), "v")
		svc.set_tag("x" * 1_000_000, "v")
		svc.set_context("trace", {"trace_id": "x"})
		svc.set_context("list", [1, 2])
	lines = asab_sentry_lines(caplog)
	assert len(lines) >= 5 and all(len(line) <= notices.MAX_LINE + 60 and "\n" not in line for line in lines)
	svc.capture_message("after the hostile calls")
	event = sentry_capture.find(message="after the hostile calls")
	assert "k" not in event["tags"] and "trace" in event["contexts"]
	assert event["contexts"]["trace"]["trace_id"] != "x", "set_context('trace') cannot clobber the trace context"


def test_capture_with_bad_and_unknown_arguments_still_sends(svc, sentry_capture, caplog):
	"""Reproduction D04."""
	with caplog.at_level(logging.WARNING, logger="asab_sentry"):
		assert svc.capture_message("A tags str", tags="abc")
		assert svc.capture_message("B contexts str", contexts="abc")
		assert svc.capture_message("C typo kwarg", fingerprints=["x"])
		try:
			raise ValueError("D")
		except ValueError as e:
			assert svc.capture_exception(e, tag={"a": "b"})
		assert svc.capture_message("E bad level", level=BadStr())
		assert svc.capture_message(BadStr())
		assert svc.capture_exception("not an exception")
		assert svc.capture_message("F fingerprint", fingerprint=[Op.DB, 3, "x"])
		assert svc.capture_message("G bad fingerprint", fingerprint=[object()])
		assert svc.capture_message("H contexts", contexts={"trace": {"x": 1}, "good": {"a": 1}, "bad": 5})
	titles = [e.get("message") for e in sentry_capture.events]
	for title in ("A tags str", "B contexts str", "C typo kwarg", "E bad level", "not an exception", "F fingerprint"):
		assert title in titles
	assert sentry_capture.find(exception_type="ValueError")
	assert sentry_capture.find(message="F fingerprint")["fingerprint"] == ["db", "3", "x"]
	assert "fingerprint" not in sentry_capture.find(message="G bad fingerprint")
	assert set(sentry_capture.find(message="H contexts")["contexts"]) >= {"trace", "good"}
	lines = asab_sentry_lines(caplog)
	for needle in ("tags=...", "contexts=...", "fingerprints=...", "tag=...", "level=", "needs an exception"):
		assert any(needle in line for line in lines), needle


@pytest.fixture
def isolated(svc):
	"""A logger whose records reach only the Sentry handler: pytest's own capture handler raises on records
	that cannot be formatted, which is what these tests log."""
	handler = svc.LogHandler

	class Isolated(type(logging.getLogger("tests.never_raise"))):  # asab's logger class (struct_data)
		def callHandlers(self, record):
			handler.handle(record)  # (pytest attaches its capture handlers to non-propagating loggers too)

	yield Isolated("tests.never_raise.isolated")


def test_log_call_that_cannot_be_formatted_is_sent_raw(isolated, sentry_capture, caplog):
	with caplog.at_level(logging.WARNING, logger="asab_sentry"):
		isolated.error("E two args %s %s", 1)
	event = sentry_capture.find(message="E two args %s %s")
	assert event["logentry"]["message"] == "E two args %s %s"
	assert any("could not be formatted" in line for line in asab_sentry_lines(caplog))


def test_log_object_with_broken_repr_or_str(isolated, sentry_capture):
	"""Reproduction 06: the record is sent with what renders; struct_data keeps every key."""
	isolated.error(Detached())
	isolated.error(Unprintable())
	isolated.error("Row update failed", struct_data={"before": 1, "row": Detached(), "after": 2})
	assert sentry_capture.find(message="Detached row #7")
	assert sentry_capture.find(message="<Unprintable object that cannot be printed>")
	extra = sentry_capture.find(message="Row update failed")["extra"]
	assert extra["before"] == 1 and extra["after"] == 2 and "broken repr" in extra["row"]


def test_one_line_per_kind_per_minute(svc, caplog):
	with caplog.at_level(logging.ERROR, logger="asab_sentry"):
		for _ in range(50):
			svc.set_tags("not a mapping")
	assert len([line for line in asab_sentry_lines(caplog) if "set_tags()" in line]) == 1
	notices._last["set_tags argument"] -= notices.INTERVAL + 1  # a minute later
	with caplog.at_level(logging.ERROR, logger="asab_sentry"):
		svc.set_tags("not a mapping")
	lines = [line for line in asab_sentry_lines(caplog) if "set_tags()" in line]
	assert len(lines) == 2 and "(49 more like this in the last minute)" in lines[1]


def test_lines_never_become_events(svc, sentry_capture):
	svc.set_tags("not a mapping")
	svc.capture_message("marker")
	assert [e.get("message") for e in sentry_capture.events] == ["marker"]


def test_error_message_is_one_bounded_line(svc, caplog):
	with caplog.at_level(logging.ERROR, logger="asab_sentry"):
		svc.set_tag("k\n" * 500_000, "v")
	(line,) = asab_sentry_lines(caplog)
	assert len(line) < 200 and "\n" not in line


def test_breadcrumb_that_cannot_be_formatted_is_kept_raw(isolated, sentry_capture):
	isolated.warning("crumb %s %s", 1)  # a breadcrumb only (events start at ERROR)
	isolated.error("then an error")
	event = sentry_capture.find(message="then an error")
	assert "crumb %s %s" in [c["message"] for c in event["breadcrumbs"]["values"]]


def test_log_records_of_odd_shapes_never_raise(svc, sentry_capture, caplog):
	"""Records rebuilt by logging.makeLogRecord (e.g. from a socket handler) can carry a non-str name."""
	caplog.set_level(logging.WARNING)
	logging.getLogger().handle(logging.makeLogRecord({"name": 5, "msg": "odd name", "levelno": 40}))
	assert any("could not be handled by Sentry's log handler" in line for line in asab_sentry_lines(caplog))
	L.error("after the odd records")
	assert sentry_capture.find(message="after the odd records")
