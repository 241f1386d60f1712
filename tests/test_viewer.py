"""asab-sentry events: list, show (exception chain, frames, locals, breadcrumbs, tags, contexts; span waterfall),
tail, --json; 80 columns."""

import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from asab_sentry.cli import main
from asab_sentry.collector.server import CollectorSettings, start_in_thread
from asab_sentry.collector.store import Store
from asab_sentry.collector.viewer import waterfall
from helpers import configure, run_app

L = logging.getLogger("tests.viewer")


@pytest.fixture
def storage(tmp_path, referee):
	"""A collector storing to a file, fed by a real SentryService with errors and a transaction."""
	path = str(tmp_path / "events.sqlite")
	with start_in_thread(Store(path), CollectorSettings()) as running:
		running.Collector.Listeners.append(referee.check_collector_envelope)
		configure({"sentry": {"data_source_name": running.dsn, "traces_sample_rate": "1", "release": "App@v1"}})

		def inner(order_id):
			local_note = "about to fail"  # noqa: F841
			raise KeyError("order {} missing".format(order_id))

		async def body(app):
			L.warning("looking up", struct_data={"order": 5})
			app.SentryService.set_tag("tenant", "acme")
			app.SentryService.set_context("order", {"id": 5})
			try:
				try:
					inner(5)
				except KeyError as e:
					raise RuntimeError("lookup failed") from e
			except RuntimeError as e:
				app.SentryService.capture_exception(e)
			with app.SentryService.transaction("task", "import orders"):
				with app.SentryService.span("db", "select orders"):
					time.sleep(0.02)
				with app.SentryService.span("http", "post results"):
					with app.SentryService.span("serialize", "json"):
						time.sleep(0.01)
					time.sleep(0.01)

		run_app(body)
		import sentry_sdk

		sentry_sdk.flush(5)
		from asab_sentry import _sdk

		_sdk.reset()
	return path


def run_cli(capsys, *args):
	code = main(list(args))
	out = capsys.readouterr().out
	return code, out


def ids(storage):
	store = Store(storage)
	return {i["type"]: i["id"] for i in store.list(limit=100)}


def test_list_fits_80_columns(storage, capsys):
	code, out = run_cli(capsys, "events", "--storage", storage, "list")
	assert code == 0
	lines = out.rstrip("\n").splitlines()
	assert lines[0].split()[:4] == ["ID", "TIME", "TYPE", "LEVEL"]
	assert any("RuntimeError: lookup failed" in line and "v1/production" in line for line in lines)
	assert any("txn" in line and "import orders" in line for line in lines)
	assert all(len(line) <= 80 for line in lines)


def test_list_filters_and_json(storage, capsys):
	code, out = run_cli(capsys, "events", "--storage", storage, "--json", "list", "--type", "transaction")
	items = json.loads(out)
	assert [i["title"] for i in items] == ["import orders"]
	code, out = run_cli(
		capsys, "events", "--storage", storage, "--json", "list", "--tag", "tenant:acme", "--level", "error"
	)
	assert [i["exception_type"] for i in json.loads(out)] == ["RuntimeError"]
	assert run_cli(capsys, "events", "--storage", storage, "list", "--tag", "broken")[0] == 2


def test_show_error(storage, capsys):
	code, out = run_cli(capsys, "events", "--storage", storage, "show", str(ids(storage)["event"]))
	assert code == 0
	assert "KeyError: 'order 5 missing'" in out
	assert "The above exception was followed by:" in out
	assert "RuntimeError: lookup failed   [generic, handled]" in out
	assert ">>" in out and 'raise KeyError("order {} missing".format(order_id))' in out
	assert "local_note = 'about to fail'" in out or "local_note = about to fail" in out
	assert "tenant" in out and "acme" in out
	assert "-- Breadcrumbs" in out and 'looking up {"order": 5}' in out
	assert "-- Contexts" in out and '"id": 5' in out
	assert "release:     App@v1" in out
	# Relay moved server_name into the tags; the header still shows it
	stored = Store(storage).get(ids(storage)["event"])["payload"]
	assert "server_name" not in stored and dict(stored["tags"])["server_name"]
	assert "server_name: {}\n".format(dict(stored["tags"])["server_name"]) in out
	assert all(len(line) <= 80 for line in out.splitlines()), max(out.splitlines(), key=len)


def test_show_transaction_waterfall(storage, capsys):
	code, out = run_cli(capsys, "events", "--storage", storage, "show", str(ids(storage)["transaction"]))
	assert code == 0
	rows = [line for line in out.splitlines() if "█" in line]
	assert [r.split("  ")[0].strip() for r in rows][:1] == ["import orders"]
	labels = [r[:26].rstrip() for r in rows]
	assert labels == ["import orders", "  db select orders", "  http post results", "    serialize json"]
	assert all(len(line) <= 80 for line in rows)
	bars = {r[:26].strip(): r[27 : 27 + 44] for r in rows}
	# bars are proportional: the whole transaction spans (nearly) the full width, a child less
	assert bars["import orders"].count("█") > bars["db select orders"].count("█") > 0
	assert bars["http post results"].index("█") > bars["db select orders"].index("█")


def test_show_json_and_missing(storage, capsys):
	code, out = run_cli(capsys, "events", "--storage", storage, "--json", "show", str(ids(storage)["event"]))
	assert json.loads(out)["payload"]["exception"]["values"][-1]["type"] == "RuntimeError"
	assert run_cli(capsys, "events", "--storage", storage, "show", "9999")[0] == 1


def test_waterfall_proportions():
	txn = {
		"transaction": "t",
		"start_timestamp": 100.0,
		"timestamp": 101.0,
		"contexts": {"trace": {"span_id": "root"}},
		"spans": [
			{
				"span_id": "a",
				"parent_span_id": "root",
				"op": "x",
				"description": "first half",
				"start_timestamp": 100.0,
				"timestamp": 100.5,
			},
			{
				"span_id": "b",
				"parent_span_id": "root",
				"op": "y",
				"description": "second half",
				"start_timestamp": 100.5,
				"timestamp": 101.0,
			},
		],
	}
	rows = waterfall(txn, width=80)
	bar_width = 80 - 26 - 10 - 2
	first = rows[1][27 : 27 + bar_width]
	second = rows[2][27 : 27 + bar_width]
	assert first.count("█") == bar_width // 2 and first.startswith("█")
	assert second.index("█") == bar_width // 2
	assert rows[0].rstrip().endswith("1000.0ms")


def test_tail_follows_new_items(tmp_path, referee):
	path = str(tmp_path / "tail.sqlite")
	with start_in_thread(Store(path), CollectorSettings()) as running:
		running.Collector.Listeners.append(referee.check_collector_envelope)
		tail = subprocess.Popen(
			[sys.executable, "-m", "asab_sentry.cli", "events", "--storage", path, "tail"],
			stdout=subprocess.PIPE,
			text=True,
			env=dict(os.environ, PYTHONUNBUFFERED="1"),
		)
		watchdog = threading.Timer(30, tail.kill)  # a silent tail must not hang the suite: readline() then ends
		watchdog.start()
		try:
			assert tail.stdout.readline().split()[:2] == ["ID", "TIME"]
			configure({"sentry": {"data_source_name": running.dsn}})

			async def body(app):
				app.SentryService.capture_message("live message")

			run_app(body)
			import sentry_sdk

			sentry_sdk.flush(5)
			line = tail.stdout.readline()
			assert "live message" in line
		finally:
			watchdog.cancel()
			tail.kill()
			tail.wait()
		from asab_sentry import _sdk

		_sdk.reset()


def test_events_from_a_running_collector_api(tmp_path, capsys, referee):
	with start_in_thread(Store(str(tmp_path / "api.sqlite")), CollectorSettings()) as running:
		running.Collector.Listeners.append(referee.check_collector_envelope)
		configure({"sentry": {"data_source_name": running.dsn}})

		async def body(app):
			app.SentryService.capture_message("via api")

		run_app(body)
		import sentry_sdk

		sentry_sdk.flush(5)
		code, out = run_cli(capsys, "events", "--url", running.url, "--json", "list", "--type", "event")
		(item,) = json.loads(out)
		code, out = run_cli(capsys, "events", "--url", running.url, "show", str(item["id"]))
		assert "via api" in out
		assert run_cli(capsys, "events", "--url", running.url, "show", "999")[0] == 1
		from asab_sentry import _sdk

		_sdk.reset()


def test_missing_storage_file_is_a_clear_error(tmp_path, capsys):
	code = main(["events", "--storage", str(tmp_path / "none.sqlite"), "list"])
	assert code == 1
	assert "No storage file" in capsys.readouterr().err
	assert not (tmp_path / "none.sqlite").exists()
