"""Log records → events and breadcrumbs: levels, NOTICE, struct_data, no formatter artefacts."""

import io
import logging

import asab
import asab.log
import pytest

from helpers import configure, payloads, run_app, text

L = logging.getLogger("tests.logging")


def test_error_log_becomes_event_with_struct_data(sentry_capture):
	app = sentry_capture.application()
	L.error("Cannot connect to %s", "db", struct_data={"host": "db.example", "attempt": 3})
	event = sentry_capture.find(level="error", logger="tests.logging")
	assert event["logentry"] == {
		"message": "Cannot connect to %s",
		"params": ["db"],
		"formatted": "Cannot connect to db",
	}
	assert event["extra"]["host"] == "db.example" and event["extra"]["attempt"] == 3
	assert app is not None


def test_struct_data_in_breadcrumb_data_and_no_asctime(sentry_capture):
	sentry_capture.application()
	# asab's console formatter, placed before the Sentry handler, sets record.asctime on every record it formats.
	console = io.StringIO()
	formatting = logging.StreamHandler(console)
	formatting.setFormatter(
		asab.log.StructuredDataFormatter(fmt="%(asctime)s %(levelname)s %(struct_data)s%(message)s")
	)
	root = logging.getLogger()
	root.handlers.insert(0, formatting)
	root.setLevel(logging.INFO)
	L.warning("cache is cold", struct_data={"cache": "users"})
	L.error("then it failed", struct_data={"attempt": 2})
	assert 'cache="users"' in console.getvalue(), "the formatter ran first"
	event = sentry_capture.find(message="then it failed")
	crumb = [c for c in event["breadcrumbs"]["values"] if c["message"] == "cache is cold"][0]
	assert crumb["data"] == {"cache": "users"}
	assert crumb["level"] == "warning" and crumb["category"] == "tests.logging" and crumb["type"] == "log"
	assert event["extra"] == {"attempt": 2} or set(event["extra"]) == {"attempt", "sys.argv"}
	for crumb in event["breadcrumbs"]["values"]:
		assert "asctime" not in crumb.get("data", {})


def test_extra_attributes_reach_extra(sentry_capture):
	sentry_capture.application()
	L.error("with extra", extra={"order_id": 42})
	assert sentry_capture.find(message="with extra")["extra"]["order_id"] == 42


@pytest.mark.sentry_config({"sentry:logging": {"events": "notice", "breadcrumbs": "debug"}})
def test_notice_event_has_info_level(sentry_capture):
	sentry_capture.application()
	L.log(asab.LOG_NOTICE, "a notice")
	event = sentry_capture.find(message="a notice")
	assert event["level"] == "info"


def test_notice_breadcrumb_has_info_level(sentry_capture):
	sentry_capture.application()
	L.log(asab.LOG_NOTICE, "noticed")
	L.error("after notice")
	crumbs = sentry_capture.find(message="after notice")["breadcrumbs"]["values"]
	assert [c["level"] for c in crumbs if c["message"] == "noticed"] == ["info"]


def test_warning_is_breadcrumb_not_event_by_default(sentry_capture):
	sentry_capture.application()
	L.warning("only a breadcrumb")
	assert sentry_capture.find_all(message="only a breadcrumb") == []
	L.error("trigger")
	crumbs = sentry_capture.find(message="trigger")["breadcrumbs"]["values"]
	assert "only a breadcrumb" in [c["message"] for c in crumbs]


@pytest.mark.sentry_config("[sentry:logging]\nevents=warning\nbreadcrumbs=error\n")
def test_levels_are_configurable(sentry_capture):
	sentry_capture.application()
	L.warning("now an event")
	assert sentry_capture.find(message="now an event")["level"] == "warning"
	L.log(asab.LOG_NOTICE, "not even a breadcrumb")
	L.error("check")
	crumbs = sentry_capture.find(message="check")["breadcrumbs"]["values"]
	assert "not even a breadcrumb" not in [c["message"] for c in crumbs]


@pytest.mark.sentry_config({"sentry:logging": {"events": "off", "breadcrumbs": "off"}})
def test_off_disables_capture(sentry_capture):
	sentry_capture.application()
	L.critical("nothing")
	sentry_capture.application().get_service("asab.SentryService").capture_message("explicit")
	assert [text(e) for e in sentry_capture.events] == ["explicit"]
	assert "breadcrumbs" not in sentry_capture.events[0] or not sentry_capture.events[0]["breadcrumbs"]["values"]


def test_critical_is_fatal(sentry_capture):
	sentry_capture.application()
	L.critical("meltdown")
	assert sentry_capture.find(message="meltdown")["level"] == "fatal"


def test_logged_exception_is_structured(sentry_capture):
	sentry_capture.application()
	try:
		{}["missing"]
	except KeyError:
		L.exception("lookup failed")
	event = sentry_capture.find(message="lookup failed")
	(exc,) = event["exception"]["values"]
	assert exc["type"] == "KeyError" and exc["mechanism"] == {"type": "logging", "handled": True}
	assert exc["stacktrace"]["frames"][-1]["function"] == "test_logged_exception_is_structured"


def test_records_of_sentry_sdk_itself_are_ignored(sentry_capture):
	sentry_capture.application()
	logging.getLogger("sentry_sdk.integrations.example").error("sdk talking")
	assert sentry_capture.events == []


def test_invalid_tag_message_is_not_an_event(sentry_capture, caplog):
	app = sentry_capture.application()
	with caplog.at_level(logging.ERROR):
		app.get_service("asab.SentryService").set_tag("bad key", "v")
	assert "Tag 'bad key' not set" in caplog.text
	assert sentry_capture.events == []


def test_info_breadcrumbs_over_http_when_root_level_allows(collector):
	configure({"sentry": {"data_source_name": collector.dsn}, "logging": {"verbose": "true"}})

	async def body(app):
		logging.getLogger().setLevel(logging.DEBUG)
		L.info("an info line", struct_data={"k": "v"})
		L.debug("a debug line")
		L.error("the error")

	run_app(body)
	(event,) = payloads(collector)
	crumbs = {c["message"]: c for c in event["breadcrumbs"]["values"]}
	assert crumbs["an info line"]["level"] == "info" and crumbs["an info line"]["data"] == {"k": "v"}
	assert "a debug line" not in crumbs


def test_mapping_arguments_and_non_string_messages(sentry_capture):
	sentry_capture.application()
	L.error("user %(name)s failed", {"name": "alice"})
	L.error(ValueError("logged object"))
	event = sentry_capture.find(message="user alice failed")
	assert event["logentry"]["params"] == {"name": "alice"}
	assert sentry_capture.find(message="logged object")["logentry"]["formatted"] == "logged object"


def test_filters_on_the_handler_are_respected(sentry_capture):
	app = sentry_capture.application()
	handler = app.get_service("asab.SentryService").LogHandler
	handler.addFilter(lambda record: "secret" not in record.getMessage())
	L.error("contains a secret")
	L.error("harmless")
	assert sentry_capture.find_all(message="secret") == []
	assert sentry_capture.find(message="harmless")
