"""The asab-sentry command's conventions: options before and after a view, plurals, --version, help everywhere,
quiet ends on a closed pipe, one-line errors (stopped collector, busy port), unknown [collector] options."""

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading

import asab
import pytest

import asab_sentry
from asab_sentry import cli
from asab_sentry.cli import main
from asab_sentry.collector import app as collector_app
from asab_sentry.collector.envelope import parse_store_body
from asab_sentry.collector.store import Store
from asab_sentry.demo import plural

BIN = os.path.dirname(sys.executable)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def cli_env(**extra):
	"""The environment of a user whose virtualenv is not activated: the venv's bin/ is not on PATH."""
	env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "PYTEST", "VIRTUAL_ENV"))}
	env["PATH"] = DEFAULT_PATH
	env.update(extra)
	return env


@pytest.fixture
def storage(tmp_path):
	"""A storage file with `count` messages: 'message 1' ... (ids 1..count)."""

	def fill(count):
		path = str(tmp_path / "events.sqlite")
		store = Store(path)
		for n in range(1, count + 1):
			body = json.dumps({"event_id": "{:032x}".format(n), "level": "error", "message": "message {}".format(n)})
			store.add(parse_store_body(body.encode()), "1", received=1_700_000_000 + n)
		store.close()
		return path

	return fill


def run(capsys, *args):
	code = main(list(args))
	captured = capsys.readouterr()
	return code, captured.out, captured.err


def test_source_options_after_the_view_and_before_it(storage, capsys):
	path = storage(3)
	for args in (
		("events", "list", "--json", "--storage", path),
		("events", "--json", "list", "--storage", path),
		("events", "--storage", path, "--json", "list"),
		("events", "--storage", path, "list", "--json"),
	):
		code, out, _ = run(capsys, *args)
		assert code == 0, args
		assert [i["title"] for i in json.loads(out)] == ["message 1", "message 2", "message 3"], args
	code, out, _ = run(capsys, "events", "show", "2", "--json", "--storage", path)
	assert code == 0 and json.loads(out)["payload"]["logentry"]["formatted"] == "message 2"  # stored normalized
	code, out, _ = run(capsys, "events", "--storage", path, "show", "2")
	assert code == 0 and "message 2" in out and not out.startswith("{")
	# An option given only before the view is not reset by the view's own parser.
	code, out, err = run(capsys, "events", "--storage", path + ".missing", "list")
	assert code == 1 and path + ".missing" in err


def test_plurals():
	assert [plural(n, "event") for n in (0, 1, 2)] == ["0 events", "1 event", "2 events"]


def test_version(capsys):
	with pytest.raises(SystemExit) as exit:
		main(["--version"])
	assert exit.value.code == 0
	assert capsys.readouterr().out.strip() == "asab-sentry {}".format(asab_sentry.__version__)


def test_bare_command_prints_the_full_help(capsys):
	code, out, _ = run(capsys)
	assert code == 2
	assert out.startswith("usage: asab-sentry")
	for command in ("demo", "collector", "events", "--version"):
		assert command in out
	code, out, _ = run(capsys, "events")
	assert code == 2
	assert out.startswith("usage: asab-sentry events")
	for view in ("list", "tail", "show", "--storage", "--url", "--json"):
		assert view in out


def walk(parser, path=("asab-sentry",)):
	for action in parser._actions:
		if isinstance(action, argparse._SubParsersAction):
			helps = {choice.dest: choice.help for choice in action._choices_actions}
			for name, sub in action.choices.items():
				yield path + (name,), "(the command itself)", helps.get(name)
				yield from walk(sub, path + (name,))
		else:
			yield path, "/".join(action.option_strings) or action.dest, action.help


def test_every_command_and_argument_has_help():
	missing = [(" ".join(p), name) for p, name, text in walk(cli._parser()) if not text or text == argparse.SUPPRESS]
	assert not missing
	assert len(list(walk(cli._parser()))) > 40


def test_output_into_a_closed_pipe_ends_quietly(storage):
	path = storage(1500)  # far more than a pipe buffers, so writing goes on after the reader is gone
	for args in (["list", "--limit", "1500"], ["list", "--limit", "1500", "--json"]):
		out = subprocess.run(
			"{} events --storage {} {} | head -n 1".format(
				shlex.quote(os.path.join(BIN, "asab-sentry")), path, " ".join(args)
			),
			shell=True,
			capture_output=True,
			text=True,
			timeout=60,
			env=cli_env(),
		)
		assert out.returncode == 0
		assert out.stdout.count("\n") == 1
		assert out.stderr == "", out.stderr


def test_url_of_a_stopped_collector_is_one_line(capsys):
	with socket.socket() as s:  # a free port nobody listens on
		s.bind(("127.0.0.1", 0))
		url = "http://127.0.0.1:{}".format(s.getsockname()[1])
	for args in (("events", "--url", url, "list"), ("events", "show", "1", "--url", url)):
		code, out, err = run(capsys, *args)
		assert code == 1
		assert out == ""
		assert err.count("\n") == 1 and url in err and "Traceback" not in err
	code, out, err = run(capsys, "events", "--url", "127.0.0.1:8999", "list")
	assert code == 2 and err.count("\n") == 1 and "'127.0.0.1:8999'" in err


def test_collector_on_a_busy_port_exits_with_one_line(tmp_path):
	with socket.socket() as busy:
		busy.bind(("127.0.0.1", 0))
		busy.listen()
		port = busy.getsockname()[1]
		out = subprocess.run(
			[
				os.path.join(BIN, "asab-sentry"),
				"collector",
				"--port",
				str(port),
				"--storage",
				str(tmp_path / "c.sqlite"),
			],
			capture_output=True,
			text=True,
			timeout=60,
			env=cli_env(),
			cwd=tmp_path,
		)
	assert out.returncode == 1
	assert out.stdout == ""
	assert out.stderr.count("\n") == 1, out.stderr
	assert "127.0.0.1:{}".format(port) in out.stderr and "in use" in out.stderr


def test_collector_stops_when_the_port_is_taken_after_the_check(tmp_path, monkeypatch, caplog):
	"""The port can be taken between the early check and the start: the collector exits 1, not listening nowhere."""
	monkeypatch.setattr(collector_app, "_check_listen", lambda listen: None)
	with socket.socket() as busy:
		busy.bind(("127.0.0.1", 0))
		busy.listen()
		port = busy.getsockname()[1]
		app = collector_app.CollectorApplication(overrides={"port": port, "storage": str(tmp_path / "c.sqlite")})
		timer = threading.Timer(30, app.stop)  # only a failing test ever needs it
		timer.start()
		try:
			code = app.run()
		finally:
			timer.cancel()
			app.Store.close()
	assert code == 1
	assert any("Cannot listen on 127.0.0.1:{}".format(port) in r.getMessage() for r in caplog.records)


def test_unknown_collector_options_are_warned(tmp_path, caplog):
	conf = tmp_path / "collector.conf"
	conf.write_text("[collector]\nlisten=127.0.0.1 0\nretention_cont=10\nstorage={}\n".format(tmp_path / "c.sqlite"))
	app = collector_app.CollectorApplication(args=["-c", str(conf)])
	app.Store.close()
	warnings = [r.getMessage() for r in caplog.records if r.name == "asab_sentry.collector.app"]
	assert warnings == ["Unknown option [collector] retention_cont is ignored."]
	assert asab.Config.get("collector", "retention_cont") == "10"


def test_demo_explore_lines_work_as_printed_without_an_activated_venv(tmp_path):
	"""The demo's advice runs as printed by a user whose venv is not on PATH; its counts have the right plurals."""
	out = subprocess.run(
		[os.path.join(BIN, "asab-sentry"), "demo"],
		capture_output=True,
		text=True,
		timeout=180,
		env=cli_env(),
		cwd=tmp_path,
	)
	assert out.returncode == 0, out.stdout + out.stderr
	arrived = re.search(r"^Arrived: (.*)$", out.stdout, re.M).group(1)
	for count, noun in re.findall(r"(\d+) (\w+)", arrived):
		assert noun.endswith("s") == (count != "1"), arrived
	explore = out.stdout.split("Explore it:\n", 1)[1].splitlines()
	assert len(explore) == 3
	for line in explore:
		command = line.split("#", 1)[0].strip()
		assert not command.startswith("asab-sentry "), "a bare name is not found without the venv on PATH"
		ran = subprocess.run(
			command, shell=True, capture_output=True, text=True, timeout=60, env=cli_env(), cwd=tmp_path
		)
		assert ran.returncode == 0 and ran.stdout and not ran.stderr, (command, ran.stderr)


def test_advice_in_messages_runs_as_printed_without_an_activated_venv(tmp_path):
	"""Commands the CLI's own messages suggest (no storage yet; the help's epilog) run as printed."""
	exe = os.path.join(BIN, "asab-sentry")
	missing = subprocess.run(
		[exe, "events", "list"], capture_output=True, text=True, timeout=60, env=cli_env(), cwd=tmp_path
	)
	assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing.stderr
	helped = subprocess.run([exe], capture_output=True, text=True, timeout=60, env=cli_env(), cwd=tmp_path)
	suggested = re.findall(r"start '(.+?) collector'", missing.stderr) + re.findall(
		r"'(.+?) COMMAND --help'", helped.stdout
	)
	assert len(suggested) == 2
	for command in suggested:
		ran = subprocess.run(
			command + " --version", shell=True, capture_output=True, text=True, env=cli_env(), cwd=tmp_path
		)
		assert ran.returncode == 0 and asab_sentry.__version__ in ran.stdout, (command, ran.stderr)


@pytest.mark.parametrize("limit, words", [(1, "1 envelope per"), (2, "2 envelopes per")])
def test_rate_limit_message_has_the_right_plural(limit, words):
	import urllib.error
	import urllib.request

	from asab_sentry.collector.server import CollectorSettings, start_in_thread

	body = b'{"event_id":"' + b"a" * 32 + b'"}\n{"type":"event"}\n{"message":"x","level":"error"}\n'
	headers = {"X-Sentry-Auth": "Sentry sentry_version=7, sentry_key=asab-sentry, sentry_client=test/1.0"}
	with start_in_thread(Store(":memory:"), CollectorSettings(rate_limit=limit, rate_window=60)) as running:
		url = "{}/api/1/envelope/".format(running.url)
		for _ in range(limit):
			with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=10) as ok:
				assert ok.status == 200
		with pytest.raises(urllib.error.HTTPError) as refused:
			urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=10)
	assert refused.value.code == 429
	assert "rate limit of {} 60s".format(words) in refused.value.read().decode()


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_collector_on_a_port_out_of_range_exits_with_one_line(tmp_path, port):
	"""--port 70000 said "ready" and ran listening nowhere (bind()'s OverflowError ended only a task)."""
	out = subprocess.run(
		[os.path.join(BIN, "asab-sentry"), "collector", "--port", port, "--storage", str(tmp_path / "c.sqlite")],
		capture_output=True,
		text=True,
		timeout=60,
		env=cli_env(),
		cwd=tmp_path,
	)
	assert out.returncode != 0
	assert out.stderr.count("\n") == 1, out.stderr
	assert "[collector] listen" in out.stderr and "0 to 65535" in out.stderr


@pytest.mark.parametrize("command", [["events", "list"], ["events", "issues"], ["collector", "--port", "0"]])
def test_a_storage_file_that_is_not_a_database_is_one_line(tmp_path, command):
	"""--storage naming another file (a typo, the wrong tab completion) ended in an sqlite3 traceback."""
	other = tmp_path / "notes.txt"
	other.write_text("not a database, but text that is long enough to have a header " * 4)
	out = subprocess.run(
		[os.path.join(BIN, "asab-sentry"), *command, "--storage", str(other)],
		capture_output=True,
		text=True,
		timeout=60,
		env=cli_env(),
		cwd=tmp_path,
	)
	assert out.returncode == 1
	assert out.stderr.count("\n") == 1, out.stderr
	assert "notes.txt" in out.stderr and "not a storage file of the collector" in out.stderr
	assert other.read_text().startswith("not a database")
