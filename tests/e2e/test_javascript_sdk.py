"""
The official JavaScript SDK (``@sentry/node`` 11, installed by npm) against the collector, with the DSN the
collector prints: an error (three times: one issue), a message, v2 spans, logs, check-ins, an attachment and
feedback — each stored in the shape the viewer and the web UI read.
"""

import json
import urllib.request

import pytest
from jssdk import JavaScriptSdkUnavailable, ensure_installed, run_app

from asab_sentry.collector.viewer import format_item


@pytest.fixture(scope="module")
def sentry_node():
	try:
		return ensure_installed()
	except JavaScriptSdkUnavailable as e:
		pytest.skip("the JavaScript SDK is not available here: {}".format(e))


def api(collector, path):
	with urllib.request.urlopen(collector.url + path, timeout=10) as response:
		data = response.read()
		return json.loads(data) if response.headers.get("Content-Type", "").startswith("application/json") else data


def test_everything_the_javascript_sdk_sends_is_stored_right(sentry_node, collector):
	ids = run_app(collector.dsn)  # the DSN exactly as the collector prints it
	store = collector.Collector.Store

	# Errors: one issue with three events, its culprit the innermost in-app frame.
	issues = {i["title"]: i for i in api(collector, "/api/0/issues")["issues"]}
	error_issue = issues["TypeError: order A-2 missing"]
	assert error_issue["count"] == 3
	assert error_issue["grouping"][:2] == ["exception", "TypeError"] and error_issue["culprit"].endswith("innerLookup")
	assert (error_issue["releases"], error_issue["environments"]) == (["jsapp@1.2.3"], ["e2e"])
	(error,) = [i for i in store.list(type="event", limit=10) if i["event_id"] == ids["errorId"]]
	event = store.get(error["id"])
	frames = event["payload"]["exception"]["values"][-1]["stacktrace"]["frames"]
	assert frames[-1]["function"] == "innerLookup" and frames[-1]["in_app"] is True
	crumbs = event["payload"]["breadcrumbs"]["values"]  # normalized: the JS SDK sends a plain list
	assert any(c.get("message") == "looking up A-0" for c in crumbs)
	assert all(isinstance(c.get("timestamp"), float) for c in crumbs)

	# The message, at its level.
	(message,) = [i for i in store.list(type="event", limit=10) if i["event_id"] == ids["messageId"]]
	assert message["level"] == "warning" and message["title"] == "inventory low"
	assert issues["inventory low"]["grouping"] == ["message", "inventory low"]

	# The attachment belongs to the error and downloads as the exact bytes.
	(attachment,) = [i for i in event["linked"] if i["type"] == "attachment"]
	assert attachment["title"] == "dump.bin"
	assert api(collector, "/api/0/items/{}/attachment".format(attachment["id"])) == bytes(
		[0, 255, 16, 13, 10, 0, 200, 128]
	)

	# Feedback, about the error.
	(feedback,) = store.list(type="feedback")
	assert feedback["title"] == "The order page broke" and feedback["parent_event_id"] == ids["errorId"]
	assert store.get(feedback["id"])["payload"]["contexts"]["feedback"]["contact_email"] == "dev@example.org"

	# v2 spans: a trace with the parent and its child.
	traces = api(collector, "/api/0/traces")["traces"]
	(trace,) = [t for t in traces if t["name"] == "import orders"]
	spans = api(collector, "/api/0/traces/" + trace["trace_id"])["spans"]
	by_name = {s["name"]: s for s in spans}
	assert by_name["select orders"]["parent_span_id"] == by_name["import orders"]["span_id"]
	assert by_name["import orders"]["source"] == "span" and by_name["select orders"]["duration"] > 0

	# Logs: one row per record, filterable.
	logs = api(collector, "/api/0/logs?order=asc")["logs"]
	assert [(r["level"], r["body"]) for r in logs] == [("info", "cache miss"), ("error", "payment declined for A-7")]
	assert logs[0]["attributes"]["order_id"] == 7 and logs[0]["release"] == "jsapp@1.2.3"
	assert [r["body"] for r in api(collector, "/api/0/logs?level=error")["logs"]] == ["payment declined for A-7"]
	assert api(collector, "/api/0/logs?attribute=order_id:7")["count"] == 1

	# Check-ins: the monitor, its statuses and the duration.
	check_ins = api(collector, "/api/0/check-ins")["check_ins"]
	assert [(c["monitor_slug"], c["status"], c["duration"]) for c in check_ins] == [
		("nightly-import", "ok", 2.5),
		("nightly-import", "in_progress", None),
	]
	assert check_ins[0]["environment"] == "e2e"

	# Sessions: summed up, with their release.
	summary = api(collector, "/api/0/summary")
	assert summary["sessions"]["releases"] == ["jsapp@1.2.3"]

	# Every stored item has its release and environment, and the terminal viewer shows each one.
	for item in store.list(limit=100):
		assert (item["release"], item["environment"]) == ("jsapp@1.2.3", "e2e"), item
		assert format_item(store.get(item["id"]))
