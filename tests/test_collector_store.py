"""The collector's storage: payloads normalized once, issues, logs, spans and traces, check-ins, sessions and
client reports, attachments and profiles linked to their event, retention, schema upgrades."""

import json
import sqlite3
import time

import pytest

from asab_sentry.collector.envelope import EnvelopeError, parse_envelope
from asab_sentry.collector.normalize import Normalizer, has_relay
from asab_sentry.collector.store import Store


def envelope(*items, headers=None):
	"""An envelope: items are (type, payload (dict or bytes), extra item headers)."""
	lines = [json.dumps(headers if headers is not None else {}).encode()]
	for item_type, payload, *extra in items:
		body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
		lines.append(json.dumps(dict({"type": item_type, "length": len(body)}, **(extra[0] if extra else {}))).encode())
		lines.append(body)
	return parse_envelope(b"\n".join(lines) + b"\n")


@pytest.fixture(params=["relay", "fallback"])
def store(request):
	"""A store normalizing with Relay's normalizer, and one with the built-in fallback (Relay absent)."""
	if request.param == "relay" and not has_relay():
		pytest.fail("sentry-relay is a test dependency: pip install -e '.[test]'")
	return Store(":memory:", normalizer=Normalizer(use_relay=request.param == "relay"))


def add(store, *items, headers=None):
	return store.add(envelope(*items, headers=headers), "1")


def key_error(function="get", module="app.db", lineno=10, value="x", **extra):
	return {
		"exception": {
			"values": [
				{
					"type": "KeyError",
					"value": value,
					"stacktrace": {
						"frames": [
							{"module": "app", "function": "main", "in_app": True, "lineno": 3},
							{"module": module, "function": function, "in_app": True, "lineno": lineno},
							{"module": "collections", "function": "__getitem__", "in_app": False, "lineno": 99},
						]
					},
				}
			]
		},
		"platform": "python",
		**extra,
	}


def test_payload_variants_are_stored_in_one_shape(store):
	"""Breadcrumbs and exceptions as plain lists, numbers as strings, ISO dates, an object as level."""
	(item_id,) = add(
		store,
		(
			"event",
			{
				"event_id": "a" * 32,
				"timestamp": "2024-06-10T12:00:00Z",
				"level": {"not": "a level"},
				"breadcrumbs": [{"message": "clicked", "timestamp": "1718020000.5"}],
				"exception": [
					{
						"type": "TypeError",
						"value": "x is undefined",
						"stacktrace": {
							"frames": [{"function": "f", "filename": "app.js", "lineno": "12", "colno": "5"}]
						},
					}
				],
				"tags": {"tenant": "acme"},
				"message": "ignored when there is an exception",
			},
		),
	)
	event = store.get(item_id)["payload"]
	assert event["timestamp"] == 1718020800.0
	assert event["level"] == "error"
	assert event["breadcrumbs"] == {"values": [dict(event["breadcrumbs"]["values"][0], timestamp=1718020000.5)]}
	assert event["breadcrumbs"]["values"][0]["message"] == "clicked"
	(frame,) = event["exception"]["values"][0]["stacktrace"]["frames"]
	assert (frame["lineno"], frame["colno"]) == (12, 5)
	assert ["tenant", "acme"] in event["tags"]
	assert "message" not in event and event["logentry"]["formatted"] == "ignored when there is an exception"
	# what the client sent is kept too
	assert store.get(item_id, sent=True)["payload"]["breadcrumbs"][0]["timestamp"] == "1718020000.5"
	summary = store.list()[0]
	assert summary["title"] == "TypeError: x is undefined" and summary["level"] == "error"
	assert summary["tags"] == {"tenant": "acme"}


def test_text_that_cannot_be_stored_is_repaired(store):
	"""A lone surrogate (what sentry-sdk's JSON emits for such a Python str) in the title and body."""
	body = b'{"message": "bad \\ud800 title", "release": [1], "environment": 5}'
	(item_id,) = add(store, ("event", body))
	item = store.get(item_id)
	assert item["title"] == "bad \ufffd title"
	assert item["payload"]["logentry"]["formatted"] == "bad \ufffd title"
	assert item["release"] is None


def test_messages_with_templates(store):
	(item_id,) = add(store, ("event", {"logentry": {"message": "order %s failed", "params": [7]}}))
	assert store.get(item_id)["payload"]["logentry"]["formatted"] == "order 7 failed"
	assert store.list()[0]["title"] == "order 7 failed"


def test_identical_errors_are_one_issue_with_counts(store):
	for n in range(5):
		add(store, ("event", key_error(lineno=10 + n, value="k{}".format(n), release="app@1", environment="dev")))
	add(store, ("event", key_error(release="app@2", environment="prod")))
	(issue,) = store.issues()
	assert issue["count"] == 6
	assert issue["title"] == "KeyError: x"  # of the latest event
	assert issue["culprit"] == "app.db in get"
	assert issue["grouping"] == ["exception", "KeyError", "app.db", "get"]
	assert issue["releases"] == ["app@1", "app@2"] and issue["environments"] == ["dev", "prod"]
	assert issue["first_seen"] <= issue["last_seen"]
	events = store.list(issue_id=issue["id"], limit=100)
	assert len(events) == 6 and issue["latest_item_id"] == events[0]["id"]
	assert store.issue(issue["id"])["count"] == 6


def test_grouping_rules(store):
	add(store, ("event", key_error(function="get")))
	add(store, ("event", key_error(function="put")))  # another innermost in-app function: another issue
	add(store, ("event", key_error(function="get", module="app.cache")))  # another module
	add(store, ("event", key_error(fingerprint=["db-outage"])))
	add(store, ("event", {"message": "other", "fingerprint": ["db-outage"]}))  # same fingerprint: same issue
	add(store, ("event", key_error(fingerprint=["{{ default }}", "tenant-a"])))
	add(store, ("event", {"logentry": {"message": "order %s failed", "params": [1]}}))
	add(store, ("event", {"logentry": {"message": "order %s failed", "params": [2]}}))
	add(store, ("event", {"message": "plain text"}))
	add(store, ("transaction", {"type": "transaction", "transaction": "/x", "start_timestamp": 1, "timestamp": 2}))
	groups = {tuple(i["grouping"]): i["count"] for i in store.issues(limit=100)}
	assert groups == {
		("exception", "KeyError", "app.db", "get"): 1,
		("exception", "KeyError", "app.db", "put"): 1,
		("exception", "KeyError", "app.cache", "get"): 1,
		("fingerprint", "db-outage"): 2,
		("fingerprint", "exception", "KeyError", "app.db", "get", "tenant-a"): 1,
		("message", "order %s failed"): 2,
		("message", "plain text"): 1,
	}
	assert store.list(type="transaction")[0]["issue_id"] is None


def test_no_in_app_frame_uses_the_innermost_frame(store):
	event = key_error()
	for frame in event["exception"]["values"][0]["stacktrace"]["frames"]:
		frame["in_app"] = False
	add(store, ("event", event))
	assert store.issues()[0]["grouping"] == ["exception", "KeyError", "collections", "__getitem__"]


def test_issue_filters_count_matching_events(store):
	for _ in range(3):
		add(store, ("event", key_error(environment="dev", tags={"tenant": "a"})))
	add(store, ("event", key_error(environment="prod", level="warning", tags={"tenant": "b"})))
	add(store, ("event", {"message": "unrelated", "environment": "prod"}))
	assert [i["count"] for i in store.issues(environment="dev")] == [3]
	assert sorted(i["count"] for i in store.issues(environment="prod")) == [1, 1]
	assert [i["count"] for i in store.issues(tag=("tenant", "b"))] == [1]
	assert [i["title"] for i in store.issues(text="unrel")] == ["unrelated"]
	assert [i["count"] for i in store.issues(level="warning")] == [1]
	assert store.issues(since=time.time() + 60) == []
	assert [i["count"] for i in store.issues(sort="count")][0] == 4
	with pytest.raises(ValueError):
		store.issues(sort="nonsense")


def test_log_records_one_row_each_filterable(store):
	records = [
		{
			"timestamp": 1718020000.5,
			"level": "warn",
			"body": "cache miss for order 7",
			"trace_id": "b" * 32,
			"attributes": {
				"order.id": {"value": 7, "type": "integer"},
				"sentry.release": {"value": "shop@3", "type": "string"},
				"sentry.environment": {"value": "staging", "type": "string"},
			},
		},
		{"timestamp": "1718020001", "level": "error", "body": "payment declined", "attributes": {"order.id": 8}},
		{"timestamp": 1718020002, "level": "trace", "body": "tick"},
	]
	add(store, ("log", {"items": records}, {"content_type": "application/vnd.sentry.items.log+json"}))
	logs = store.logs(newest_first=False)
	assert [(r["level"], r["body"]) for r in logs] == [
		("warning", "cache miss for order 7"),
		("error", "payment declined"),
		("debug", "tick"),
	]
	first = logs[0]
	assert first["timestamp"] == 1718020000.5 and first["trace_id"] == "b" * 32
	assert first["attributes"]["order.id"] == 7
	assert (first["release"], first["environment"]) == ("shop@3", "staging")
	assert logs[1]["timestamp"] == 1718020001.0
	assert [r["body"] for r in store.logs(level="error")] == ["payment declined"]
	assert [r["body"] for r in store.logs(text="CACHE")] == ["cache miss for order 7"]
	assert [r["body"] for r in store.logs(attribute=("order.id", "8"))] == ["payment declined"]
	assert [r["body"] for r in store.logs(since=1718020001.5)] == ["tick"]
	(item,) = store.list(type="log")
	assert item["title"] == "3 log records" and item["level"] == "error"
	assert (item["release"], item["environment"]) == ("shop@3", "staging")


def test_v2_spans_are_grouped_into_traces_with_transactions(store):
	trace_id = "c" * 32
	add(
		store,
		(
			"span",
			{
				"items": [
					{
						"trace_id": trace_id,
						"span_id": "1" * 16,
						"name": "GET /orders",
						"is_segment": True,
						"start_timestamp": 100.0,
						"end_timestamp": 100.5,
						"status": "ok",
						"attributes": {"sentry.op": {"value": "http.server", "type": "string"}},
					},
					{
						"trace_id": trace_id,
						"span_id": "2" * 16,
						"parent_span_id": "1" * 16,
						"name": "SELECT orders",
						"start_timestamp": 100.1,
						"end_timestamp": 100.3,
						"attributes": {"sentry.release": {"value": "shop@3", "type": "string"}},
					},
				]
			},
			{"content_type": "application/vnd.sentry.items.span.v2+json"},
		),
	)
	add(
		store,
		(
			"transaction",
			{
				"type": "transaction",
				"transaction": "process order",
				"start_timestamp": 100.3,
				"timestamp": 100.9,
				"contexts": {"trace": {"trace_id": trace_id, "span_id": "3" * 16, "parent_span_id": "2" * 16}},
				"spans": [
					{
						"span_id": "4" * 16,
						"parent_span_id": "3" * 16,
						"trace_id": trace_id,
						"op": "db",
						"description": "UPDATE orders",
						"start_timestamp": 100.4,
						"timestamp": 100.6,
					}
				],
			},
		),
	)
	add(
		store,
		("event", {"message": "in the trace", "contexts": {"trace": {"trace_id": trace_id, "span_id": "5" * 16}}}),
	)
	trace = store.trace(trace_id)
	assert trace["name"] == "GET /orders"
	assert (trace["start"], trace["end"]) == (100.0, 100.9)
	assert [(s["name"], s["source"], s["parent_span_id"]) for s in trace["spans"]] == [
		("GET /orders", "span", None),
		("SELECT orders", "span", "1" * 16),
		("process order", "transaction", "2" * 16),
		("UPDATE orders", "transaction_span", "3" * 16),
	]
	assert trace["spans"][0]["op"] == "http.server" and trace["spans"][0]["duration"] == pytest.approx(0.5)
	assert [e["title"] for e in trace["errors"]] == ["in the trace"]
	(listed,) = store.traces()
	assert listed["trace_id"] == trace_id and listed["span_count"] == 4 and listed["error_count"] == 1
	(span_item,) = store.list(type="span")
	assert span_item["title"] == "GET /orders (+1 spans)" and span_item["trace_id"] == trace_id
	assert store.trace("0" * 32) is None


def test_check_ins(store):
	add(store, ("check_in", {"check_in_id": "d" * 32, "monitor_slug": "nightly", "status": "in_progress"}))
	add(
		store,
		(
			"check_in",
			{"check_in_id": "d" * 32, "monitor_slug": "nightly", "status": "error", "duration": "2.5", "release": "r1"},
		),
	)
	rows = store.check_ins()
	assert [(r["monitor_slug"], r["status"], r["duration"]) for r in rows] == [
		("nightly", "error", 2.5),
		("nightly", "in_progress", None),
	]
	assert rows[0]["release"] == "r1"
	assert [r["status"] for r in store.check_ins(status="error")] == ["error"]
	assert store.list(type="check_in")[0]["title"] == "nightly: error"


def test_sessions_and_client_reports_are_summarised(store):
	trace_header = {"trace": {"release": "web@2", "environment": "prod"}}
	add(store, ("session", {"sid": "1", "status": "ok", "init": True}), headers=trace_header)
	add(store, ("session", {"sid": "1", "status": "exited", "attrs": {"release": "web@1", "environment": "dev"}}))
	add(
		store,
		("sessions", {"aggregates": [{"started": "x", "exited": 3, "errored": 1}], "attrs": {"release": "web@1"}}),
	)
	add(
		store,
		("client_report", {"discarded_events": [{"reason": "queue_overflow", "category": "error", "quantity": 2}]}),
	)
	add(
		store,
		("client_report", {"discarded_events": [{"reason": "queue_overflow", "category": "error", "quantity": 3}]}),
	)
	summary = store.summary()
	assert summary["sessions"]["by_status"] == {"ok": 1, "exited": 1}
	assert summary["sessions"]["aggregates"] == {"exited": 3, "errored": 1, "abnormal": 0, "crashed": 0}
	assert summary["sessions"]["releases"] == ["web@2", "web@1"]
	assert summary["sessions"]["environments"] == ["prod", "dev"]
	assert summary["client_reports"] == {
		"reports": 2,
		"discarded": [{"reason": "queue_overflow", "category": "error", "quantity": 5}],
	}
	assert summary["items"] == {"session": 2, "sessions": 1, "client_report": 2}
	first = store.list(type="session", newest_first=False)[0]
	assert (first["release"], first["environment"]) == ("web@2", "prod")  # from the envelope's trace header


def test_attachments_and_profiles_belong_to_their_event(store):
	binary = bytes(range(256)) * 3
	event_id = "e" * 32
	ids = add(
		store,
		("event", {"event_id": event_id, "message": "with files"}),
		("attachment", binary, {"filename": "dump.bin", "content_type": "application/octet-stream"}),
		("attachment", "héllo".encode(), {"filename": "note.txt", "content_type": "text/plain"}),
		headers={"event_id": event_id},
	)
	txn_id = "f" * 32
	add(
		store,
		(
			"transaction",
			{"event_id": txn_id, "type": "transaction", "transaction": "t", "start_timestamp": 1, "timestamp": 2},
		),
		("profile", {"transaction": {"id": txn_id, "name": "t", "trace_id": "a" * 32}, "profile": {"samples": []}}),
		headers={"event_id": txn_id},
	)
	event = store.get(ids[0])
	assert [(i["type"], i["title"]) for i in event["linked"]] == [
		("attachment", "dump.bin"),
		("attachment", "note.txt"),
	]
	dump = store.attachment(ids[1])
	assert dump["data"] == binary and dump["filename"] == "dump.bin"
	assert store.get(ids[1])["payload"] is None and store.get(ids[1])["size"] == len(binary)
	assert store.get(ids[2])["payload"] == "héllo" and store.attachment(ids[2])["content_type"] == "text/plain"
	(txn,) = store.list(type="transaction")
	assert [i["type"] for i in store.get(txn["id"])["linked"]] == ["profile"]


def test_feedback_is_linked_to_the_event_it_is_about(store):
	add(store, ("event", {"event_id": "1" * 32, "message": "crash"}))
	add(
		store,
		(
			"feedback",
			{
				"type": "feedback",
				"contexts": {
					"feedback": {
						"message": "It broke",
						"contact_email": "a@example.org",
						"associated_event_id": "1" * 32,
					}
				},
			},
		),
	)
	(feedback,) = store.list(type="feedback")
	assert feedback["title"] == "It broke" and feedback["parent_event_id"] == "1" * 32
	assert store.get(feedback["id"])["payload"]["contexts"]["feedback"]["contact_email"] == "a@example.org"
	assert [i["type"] for i in store.get(store.list(type="event")[0]["id"])["linked"]] == ["feedback"]
	assert store.issues()[0]["count"] == 1  # feedback is not an error


def test_release_and_environment_from_the_envelope_trace_header(store):
	add(store, ("event", {"message": "m"}), headers={"trace": {"release": "r9", "environment": "qa"}})
	item = store.list()[0]
	assert (item["release"], item["environment"]) == ("r9", "qa")


def test_deep_content_that_parses_is_stored(store):
	"""Deep nesting (sentry-sdk trims at 10 levels; other clients may not) is stored; far deeper gets 400."""
	depth = 400
	body = b'{"message": "deep", "extra": {"x": ' + b"[" * depth + b"]" * depth + b"}}"
	parsed = parse_envelope(b'{}\n{"type":"event"}\n' + body + b"\n")
	(item_id,) = store.add(parsed, "1")
	assert store.get(item_id)["title"] == "deep"
	with pytest.raises(EnvelopeError):
		parse_envelope(b'{}\n{"type":"event"}\n' + body.replace(b"[", b"[" * 250).replace(b"]", b"]" * 250) + b"\n")


def test_retention_keeps_issues_consistent(tmp_path):
	store = Store(str(tmp_path / "r.sqlite"), max_count=3)
	for n in range(3):
		store.add(envelope(("event", key_error())), "1", received=time.time() - 100 + n)
	store.add(envelope(("event", {"message": "newer"})), "1")
	store.add(envelope(("log", {"items": [{"body": "b", "level": "info", "timestamp": 1}]})), "1")
	store.apply_retention()
	assert store.count() == 3
	issues = {i["title"]: i["count"] for i in store.issues()}
	assert issues["newer"] == 1 and issues["KeyError: x"] == 1
	store.MaxCount = 1
	store.apply_retention()
	assert store.issues() == [] and len(store.logs()) == 1


def test_clear(store):
	add(store, ("event", key_error()), ("log", {"items": [{"body": "b", "level": "info"}]}))
	store.clear()
	assert store.count() == 0 and store.issues() == [] and store.logs() == []


def test_a_file_of_the_previous_schema_is_moved_aside(tmp_path):
	path = tmp_path / "old.sqlite"
	db = sqlite3.connect(path)
	db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, received REAL, payload BLOB)")
	db.execute("INSERT INTO items VALUES (1, 1.0, x'00')")
	db.commit()
	db.close()
	store = Store(str(path))
	assert store.count() == 0
	store.add(envelope(("event", {"message": "m"})), "1")
	assert Store(str(path)).count() == 1
	assert sqlite3.connect(tmp_path / "old.sqlite.v1").execute("SELECT COUNT(*) FROM items").fetchone()[0] == 1


def test_a_message_with_a_stack_is_a_message(store):
	"""The JavaScript SDK's captureMessage sends an exception without a type that only carries the stack."""
	stack = {"frames": [{"function": "main", "filename": "app.js", "in_app": True}]}
	add(
		store,
		(
			"event",
			{"message": "inventory low", "exception": {"values": [{"value": "inventory low", "stacktrace": stack}]}},
		),
	)
	add(
		store,
		(
			"event",
			{
				"message": "inventory low",
				"exception": {
					"values": [{"type": "Error", "value": "x", "mechanism": {"type": "generic", "synthetic": True}}]
				},
			},
		),
	)
	(issue,) = store.issues()
	assert (
		issue["title"] == "inventory low" and issue["grouping"] == ["message", "inventory low"] and issue["count"] == 2
	)


def test_otel_log_items_of_older_sentry_sdk(store):
	"""sentry-sdk before 2.28 sends log records as ``otel_log`` items in OpenTelemetry's shape."""
	record = {
		"severityText": "warn",
		"severityNumber": 13,
		"body": {"stringValue": "cache miss"},
		"timeUnixNano": "1718020000500000000",
		"traceId": "b" * 32,
		"attributes": [
			{"key": "order_id", "value": {"intValue": "7"}},
			{"key": "sentry.release", "value": {"stringValue": "svc@4"}},
			{"key": "ratio", "value": {"doubleValue": 0.5}},
		],
	}
	add(store, ("otel_log", record))
	(log,) = store.logs()
	assert (log["level"], log["body"], log["timestamp"], log["trace_id"]) == (
		"warning",
		"cache miss",
		1718020000.5,
		"b" * 32,
	)
	assert log["attributes"] == {"order_id": 7, "sentry.release": "svc@4", "ratio": 0.5}
	assert log["release"] == "svc@4"


def test_a_batch_is_one_transaction_and_a_refused_envelope_leaves_the_others(tmp_path):
	class Refusing(Store):
		"""Refuses one envelope after some of its rows were written (as content found bad late would be)."""

		def _insert(self, row, *args):
			if row.title == "refused":
				raise EnvelopeError("refused")
			return super()._insert(row, *args)

	store = Refusing(str(tmp_path / "b.sqlite"))
	with store.batch():
		(first,) = store.add(envelope(("event", {"message": "one"})), "1")
		with pytest.raises(EnvelopeError):
			store.add(envelope(("event", {"message": "written"}), ("event", {"message": "refused"})), "1")
		(second,) = store.add(envelope(("event", {"message": "two"})), "1")
		# Nothing is visible to another connection before the batch commits.
		other = sqlite3.connect(store.Path)
		assert other.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0
		other.close()
	assert [store.get(first)["title"], store.get(second)["title"]] == ["one", "two"]
	assert store.count() == 2 and sorted(i["title"] for i in store.issues()) == ["one", "two"]


def test_the_collector_stores_every_envelope_through_store_add():
	"""Ingest calls `Store.add` for each envelope (batched in one transaction), so a wrapper of `add` sees them all."""
	import sentry_sdk

	from asab_sentry.collector.server import start_in_thread

	seen = []

	class Recording(Store):
		def add(self, envelope, project, received=None):
			seen.append([item.type for item in envelope.items])
			return super().add(envelope, project, received)

	with start_in_thread(Recording(":memory:")) as running:
		sentry_sdk.init(dsn=running.dsn, default_integrations=False)
		for n in range(5):
			sentry_sdk.capture_message("message {}".format(n))
		sentry_sdk.flush(timeout=10)
		assert running.Collector.Store.count() == 5
	assert seen == [["event"]] * 5
