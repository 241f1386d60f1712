"""
End to end against a real Bugsink server: the example application and the demo scenario, every event read
back through Bugsink's REST API. Transactions, which Bugsink discards, go to a collector as well (Spotlight)
where Relay's normalizer checks them.
"""

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys

import asab
import sentry_sdk

from asab_sentry import _sdk, payload
from asab_sentry.collector.server import CollectorSettings, start_in_thread
from asab_sentry.collector.store import Store
from asab_sentry.demo import IDENTITY, expected_checks, find_example

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from helpers import configure, run_app  # noqa: E402

L = logging.getLogger("tests.e2e")


def stored_events(bugsink):
	"""Every event Bugsink stored for the project, with its issue id, full data included."""
	events = []
	for issue in bugsink.issues():
		listing = bugsink.api("/api/canonical/0/events/?issue={}".format(issue["id"]))
		for summary in listing["results"] if isinstance(listing, dict) else listing:
			full = bugsink.api("/api/canonical/0/events/{}/".format(summary["id"]))
			full["data"]["_issue"] = issue["id"]
			events.append(full)
	return events


def exception(data):
	return payload.exceptions(data)[-1]


tags = payload.tags
message = payload.message


def test_example_application_in_bugsink(bugsink, referee, tmp_path):
	manifest = tmp_path / "MANIFEST.json"
	manifest.write_text(json.dumps({"version": "v1.2.3"}))
	config = tmp_path / "my_app.conf"
	config.write_text(
		"[general]\nmanifest={}\n[sentry]\nenvironment=demo\ntraces_sample_rate=1.0\nserver_name=e2e-box\n".format(
			manifest
		)
	)
	before = {e["id"] for e in stored_events(bugsink)}
	with start_in_thread(Store(":memory:"), CollectorSettings()) as spotlight:
		spotlight.Collector.Listeners.append(referee.check_collector_envelope)
		env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "PYTEST"))}
		env.update(IDENTITY, SENTRY_DSN=bugsink.Dsn, SENTRY_SPOTLIGHT=spotlight.url + "/stream")
		out = subprocess.run(
			[sys.executable, str(find_example()), "-c", str(config)],
			capture_output=True,
			text=True,
			timeout=120,
			env=env,
			cwd=tmp_path,
		)
		assert out.returncode == 0, out.stderr
		transactions = [
			spotlight.Collector.Store.get(i["id"]) for i in spotlight.Collector.Store.list(type="transaction")
		]
	assert [t["payload"]["transaction"] for t in transactions] == ["multiple tasks"]
	assert referee.checked >= 7  # every event and the transaction went through Relay's normalizer

	events = [e["data"] for e in stored_events(bugsink) if e["id"] not in before]
	# The demo's own acceptance checks, run on what Bugsink stored (transactions aside).
	for check in expected_checks():
		if "transaction" in check.name:
			continue
		assert check.test(events, []), check.name
	assert len(events) == 6, [message(e) or exception(e)["type"] for e in events]

	by_type = {exception(e)["type"]: e for e in events if "exception" in e}
	zero = exception(by_type["ZeroDivisionError"])
	assert zero["value"] == "division by zero"
	assert [f["function"] for f in zero["stacktrace"]["frames"]][-2:] == ["main", "call_collapsing_function"]
	assert zero["stacktrace"]["frames"][-1]["vars"]["divisor"] == "0"
	assert exception(by_type["KeyError"])["mechanism"] == {"type": "asyncio", "handled": False}

	for data in events:
		assert data["release"] == "MyApplication@v1.2.3"
		assert data["environment"] == "demo"
		assert data["server_name"] == "e2e-box"
		assert {k: tags(data)[k] for k in ("appclass", "node_id", "service_id", "instance_id", "site_id")} == {
			"appclass": "MyApplication",
			"node_id": IDENTITY["NODE_ID"],
			"service_id": IDENTITY["SERVICE_ID"],
			"instance_id": IDENTITY["INSTANCE_ID"],
			"site_id": IDENTITY["SITE_ID"],
		}
		assert data["contexts"]["demo"] == {"purpose": "show every feature", "version": 1}
		assert data["contexts"]["manifest"]["version"] == "v1.2.3"

	(db_error,) = [e for e in events if message(e) == "Cannot connect to the database"]
	assert db_error["level"] == "error"
	assert db_error["extra"]["host"] == "db.example" and db_error["extra"]["attempt"] == 3
	crumbs = db_error["breadcrumbs"]["values"]
	start = [c for c in crumbs if c["message"] == "Demo is starting"][0]
	assert start["level"] == "info" and start["data"] == {"step": "start"}
	assert [c for c in crumbs if c["message"].startswith("Cache is cold")][0]["level"] == "warning"
	(msg,) = [e for e in events if message(e) == "required_variable was not set"]
	assert msg["level"] == "info"


def test_notice_record_and_grouping_in_bugsink(bugsink, referee):
	configure({"sentry": {"data_source_name": bugsink.Dsn}, "sentry:logging": {"events": "notice"}})

	def fail(record):
		raise ValueError("record {} is invalid".format(record))

	async def body(app):
		L.log(asab.LOG_NOTICE, "Notice for e2e", struct_data={"phase": "e2e"})

		async def job():
			fail(42)

		first, second = asyncio.ensure_future(job()), asyncio.ensure_future(job())
		await asyncio.sleep(0.05)
		del first, second
		gc.collect()
		for n in (1, 2):
			L.error("Shard %s is offline", n)

	before = {e["id"] for e in stored_events(bugsink)}
	run_app(body)
	sentry_sdk.flush(10)
	_sdk.reset()
	events = [e for e in stored_events(bugsink) if e["id"] not in before]

	(notice,) = [e["data"] for e in events if message(e["data"]) == "Notice for e2e"]
	assert notice["level"] == "info"
	assert notice["extra"]["phase"] == "e2e"

	bug = [e for e in events if "exception" in e["data"] and exception(e["data"])["type"] == "ValueError"]
	assert len(bug) == 2
	assert bug[0]["data"]["_issue"] == bug[1]["data"]["_issue"], "the same bug from two tasks is one issue"

	shards = [e for e in events if message(e["data"]).startswith("Shard")]
	assert len(shards) == 2
	assert shards[0]["data"]["_issue"] == shards[1]["data"]["_issue"], "one log call site, one issue"
