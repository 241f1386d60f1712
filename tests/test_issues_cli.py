"""asab-sentry events issues [--json] and events list --issue ID, from the storage file and from --url."""

import json

import pytest
import sentry_sdk

from asab_sentry import _sdk
from asab_sentry.cli import main
from asab_sentry.collector.issue_list import format_issue
from asab_sentry.collector.server import CollectorSettings, start_in_thread
from asab_sentry.collector.store import Store
from helpers import configure, run_app


@pytest.fixture
def running(tmp_path, referee):
	"""A collector storing to a file, fed by a SentryService: 4 identical KeyErrors, 2 messages."""
	with start_in_thread(Store(str(tmp_path / "issues.sqlite")), CollectorSettings()) as running:
		running.Collector.Listeners.append(referee.check_collector_envelope)
		configure({"sentry": {"data_source_name": running.dsn, "environment": "dev"}})

		def find(orders, key):
			return orders[key]

		async def body(app):
			for n in range(4):
				try:
					find({}, n)
				except KeyError as e:
					app.SentryService.capture_exception(e)
			app.SentryService.capture_message("disk almost full")
			app.SentryService.capture_message("disk almost full")

		run_app(body)
		sentry_sdk.flush(5)
		_sdk.reset()
		running.Path = str(tmp_path / "issues.sqlite")
		yield running


def cli(capsys, *args):
	code = main(list(args))
	return code, capsys.readouterr().out


@pytest.mark.parametrize("source", ["storage", "url"])
def test_events_issues(running, capsys, source):
	where = ["--storage", running.Path] if source == "storage" else ["--url", running.url]
	code, out = cli(capsys, "events", *where, "issues")
	assert code == 0
	lines = out.rstrip("\n").splitlines()
	assert lines[0].split()[:4] == ["ISSUE", "LEVEL", "EVENTS", "LAST"]
	(key_error,) = [line for line in lines if "KeyError" in line]
	assert key_error.split()[1:3] == ["error", "4"] and "in find)" in key_error and key_error.endswith("dev")
	(message,) = [line for line in lines if "disk almost full" in line]
	assert message.split()[1:3] == ["info", "2"]
	assert all(len(line) <= 80 for line in lines)

	code, out = cli(capsys, "events", *where, "issues", "--json", "--sort", "count")
	issues = json.loads(out)
	assert [i["count"] for i in issues] == [4, 2]
	assert issues[0]["environments"] == ["dev"] and issues[0]["grouping"][0] == "exception"

	code, out = cli(capsys, "events", *where, "issues", "--json", "--q", "disk")
	assert [i["title"] for i in json.loads(out)] == ["disk almost full"]

	code, out = cli(capsys, "events", *where, "list", "--json", "--issue", str(issues[0]["id"]))
	assert code == 0 and [i["exception_type"] for i in json.loads(out)] == ["KeyError"] * 4
	code, out = cli(capsys, "events", *where, "list", "--issue", str(issues[1]["id"]))
	assert out.count("disk almost full") == 2 and "KeyError" not in out


def test_issue_lines_never_carry_terminal_control_sequences():
	issue = {
		"id": 1,
		"level": "error",
		"count": 3,
		"last_seen": 0,
		"title": "boom \x1b[2J\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07 end\r\n",
		"culprit": "app in \x1b[31mred",
		"environments": ["\x9b2J"],
	}
	line = format_issue(issue, now=100)
	assert "\x1b" not in line and "\x07" not in line and "\x9b" not in line and "\n" not in line
	assert "boom" in line and "end" in line
