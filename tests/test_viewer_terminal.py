"""asab-sentry events on a terminal: control sequences from events never printed, any stored content shown
without a traceback, the terminal's width, colours only on a terminal, local time with its zone, --since."""

import datetime
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.request

import pytest

from asab_sentry.cli import main
from asab_sentry.collector.server import CollectorSettings, start_in_thread
from asab_sentry.collector.store import Store
from asab_sentry.collector.viewer import clean, format_item, parse_time
from helpers import configure, run_app

AUTH = {"X-Sentry-Auth": "Sentry sentry_key=asab-sentry"}
HOSTILE = (
	"\x1b[2J\x1b[H\x1b]0;owned\x07\x1b]52;c;cm0gLXJmIH4=\x07\x1b]8;;https://evil.example/\x07docs\x1b]8;;\x07"
	"\x9b31m\x9d0;c1-title\x9c\u202etxt.exe"
)
SGR = re.compile(r"\x1b\[[0-9;]*m")


def post_envelope(url, body):
	request = urllib.request.Request(url + "/api/1/envelope/", data=body, method="POST", headers=AUTH)
	with urllib.request.urlopen(request, timeout=10) as response:
		return json.loads(response.read())["items"]


def event_item(event: dict | bytes, item_type="event") -> bytes:
	body = event if isinstance(event, bytes) else json.dumps(event).encode()
	return json.dumps({"type": item_type}).encode() + b"\n" + body + b"\n"


def cli(capsys, *args):
	code = main(list(args))
	captured = capsys.readouterr()
	return code, captured.out, captured.err


def test_clean():
	assert clean("a\x1b[31mred\x1b[0m b") == "ared b"
	assert clean("\x1b]0;title\x07x") == "x"
	assert clean("\x1b]52;c;Zm9v\x1b\\x") == "x"
	assert clean("\x9b2Jx\x9d8;;u\x9cy") == "xy"
	assert clean("bell\x07 nul\x00 del\x7f") == "bell\\x07 nul\\x00 del\\x7f"
	assert clean("\u202eevil") == "\\u202eevil"
	assert clean("tab\there\r\nnext") == "tab  here\nnext"
	assert clean("lone \udfff") == "lone \ufffd"
	assert clean(None) == "None" and clean(5) == "5"
	assert clean("naïve ünïcode 日本") == "naïve ünïcode 日本"


@pytest.fixture
def hostile_storage(tmp_path, referee):
	"""What a real service sends when it logs attacker-controlled text: the case of d11."""
	path = str(tmp_path / "hostile.sqlite")
	with start_in_thread(Store(path), CollectorSettings()) as running:
		configure({"sentry": {"data_source_name": running.dsn}})

		async def body(app):
			try:
				raise LookupError("user not found: " + HOSTILE)
			except LookupError as e:
				app.SentryService.capture_exception(e)
			app.SentryService.set_tag("tenant", "acme\x1b[8m")
			app.SentryService.capture_message("login failed for " + HOSTILE)

		run_app(body)
		import sentry_sdk

		sentry_sdk.flush(5)
		from asab_sentry import _sdk

		_sdk.reset()
	return path


@pytest.mark.parametrize("force_colour", [False, True])
def test_control_sequences_from_events_never_printed(hostile_storage, capsys, monkeypatch, force_colour):
	if force_colour:
		monkeypatch.setenv("FORCE_COLOR", "1")
	else:
		monkeypatch.setenv("NO_COLOR", "1")
	outputs = []
	for args in (["list"], ["issues"], ["show", "1"], ["show", "2"]):
		code, out, _ = cli(capsys, "events", "--storage", hostile_storage, *args)
		assert code == 0
		outputs.append(out)
	text = "\n".join(outputs)
	if force_colour:
		assert SGR.search(text), "colours were forced but none came"
	plain = SGR.sub("", text)  # our own colours are the only escape sequences
	for bad in ("\x1b", "\x07", "\x9b", "\x9d", "\x9c", "\u202e"):
		assert bad not in plain, repr(bad)
	assert "user not found: docs" in plain and "login failed for docs" in plain
	assert "\\u202etxt.exe" in plain  # the bidi override is shown, not obeyed
	assert "acme" in plain


@pytest.fixture
def odd_storage(tmp_path):
	"""Content the collector accepts that is not what sentry-python sends: the case of d12 and more."""
	cases = {
		"timestamp 1e20": event_item(b'{"message":"m1","timestamp":1e20}'),
		"timestamp inf": event_item(b'{"message":"m2","timestamp":1e999}'),
		"nan transaction": event_item(
			b'{"type":"transaction","transaction":"t","start_timestamp":NaN,"timestamp":NaN}', "transaction"
		),
		"extra list": event_item({"message": "m4", "extra": [1, {"k": "v"}]}),
		"contexts list": event_item({"message": "m5", "contexts": [1]}),
		"breadcrumbs list": event_item(
			{"message": "m6", "breadcrumbs": [{"message": "crumb one", "timestamp": "2024-05-01T12:00:00Z"}, "junk"]}
		),
		"frames strings": event_item({"exception": {"values": [{"type": "T7", "stacktrace": {"frames": ["a"]}}]}}),
		"mechanism string": event_item({"exception": {"values": [{"type": "T8", "mechanism": "x"}]}}),
		"lineno string": event_item(
			{
				"exception": [
					{
						"type": "T9",
						"value": "v",
						"stacktrace": {
							"frames": [
								{"lineno": "x", "pre_context": ["a", 5], "vars": [1], "function": {"f": 1}},
								{"lineno": "12", "context_line": "here()", "vars": {"n": {"deep": [1, 2]}}},
							]
						},
					}
				]
			}
		),
		"surrogate tag": event_item(b'{"message":"m10","tags":{"k\\udfff":"v"}}'),
		"spans odd": event_item(
			{
				"type": "transaction",
				"transaction": "t11",
				"start_timestamp": "2024-05-01T12:00:00Z",
				"timestamp": "2024-05-01T12:00:01Z",
				"contexts": {"trace": {"span_id": "a"}},
				"spans": [
					{"span_id": "a", "parent_span_id": "a", "start_timestamp": "x"},
					{"span_id": ["b"], "parent_span_id": {"x": 1}, "timestamp": 1e300},
					"not a span",
				],
			},
			"transaction",
		),
		"scalar payload": event_item(b'"just a string"', "check_in"),
		"binary attachment": b'{"type":"attachment","length":4,"filename":"x.bin"}\n\x00\xff\x1b[\n',
	}
	path = str(tmp_path / "odd.sqlite")
	ids = {}
	with start_in_thread(Store(path), CollectorSettings()) as running:
		for label, item in cases.items():
			(ids[label],) = post_envelope(running.url, b"{}\n" + item)
	return path, ids


RAW_EXPECTED = {
	"timestamp 1e20": "event timestamp 1e+20 unreadable",
	"nan transaction": "(no timing information)",
	"extra list": '{"k": "v"}',
	"breadcrumbs list": "crumb one",
	"frames strings": '"a"',
	"mechanism string": "T8",
	"lineno string": "here()",
	"surrogate tag": "k\ufffd",
	"spans odd": "t11",
}


def test_show_never_tracebacks_on_stored_content(odd_storage, capsys):
	"""Through the collector (which normalizes what it can): every item shows, exit 0."""
	path, ids = odd_storage
	for label, item_id in ids.items():
		code, out, err = cli(capsys, "events", "--storage", path, "show", str(item_id))
		assert code == 0, label
		assert "could not be shown in full" not in out, (label, out)
		assert "\x1b" not in out and "\x00" not in out, label
	code, out, err = cli(capsys, "events", "--storage", path, "list", "--limit", "100")
	assert code == 0 and len(out.splitlines()) == len(ids) + 1


def test_show_raw_payloads_as_sent(odd_storage):
	"""The same content as the client sent it (what a store without normalization holds): shown, not raised."""
	path, ids = odd_storage
	store = Store(path)
	for label, item_id in ids.items():
		item = store.get(item_id, sent=True)
		lines = format_item(item, 80)
		text = "\n".join(lines)
		assert "could not be shown in full" not in text, (label, text)
		assert all(len(line) <= 80 for line in lines), label
		if label in RAW_EXPECTED:
			assert RAW_EXPECTED[label] in text, (label, text)


def test_lines_follow_the_terminal_width(hostile_storage, capsys, monkeypatch):
	for columns in (60, 80, 132):
		monkeypatch.setenv("COLUMNS", str(columns))
		for args in (["list"], ["issues"], ["show", "1"]):
			code, out, _ = cli(capsys, "events", "--storage", hostile_storage, *args)
			lines = out.splitlines()
			assert max(len(line) for line in lines) <= columns, (columns, args)
			if args == ["show", "1"]:
				assert lines[0] == "=" * columns


def run_in_terminal(args, columns=100, env=None):
	"""Run the CLI with its stdout on a pseudo-terminal of ``columns``; return what it printed."""
	master, slave = pty.openpty()
	fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
	environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR", "TERM")}
	environment.update(TERM="xterm-256color", **(env or {}))
	process = subprocess.Popen(
		[sys.executable, "-m", "asab_sentry.cli"] + args, stdout=slave, stderr=subprocess.PIPE, env=environment
	)
	os.close(slave)
	chunks = []
	deadline = time.monotonic() + 60
	while time.monotonic() < deadline:
		ready, _, _ = select.select([master], [], [], 1.0)
		if ready:
			try:
				chunk = os.read(master, 65536)
			except OSError:  # the terminal closed: the process is done
				break
			if not chunk:
				break
			chunks.append(chunk)
		elif process.poll() is not None:
			break
	os.close(master)
	assert process.wait(timeout=30) == 0, process.stderr.read()
	return b"".join(chunks).decode("utf-8")


def test_colours_and_width_on_a_terminal_plain_when_piped(hostile_storage):
	shown = run_in_terminal(["events", "--storage", hostile_storage, "show", "1"], columns=100)
	assert SGR.search(shown)
	plain = SGR.sub("", shown).replace("\r\n", "\n")
	assert "\x1b" not in plain
	assert plain.splitlines()[0] == "=" * 100
	piped = subprocess.run(
		[sys.executable, "-m", "asab_sentry.cli", "events", "--storage", hostile_storage, "show", "1"],
		capture_output=True,
		env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")},
		timeout=60,
	).stdout.decode()
	assert "\x1b" not in piped
	assert piped.splitlines()[0] == "=" * 80


def test_local_time_with_its_zone(tmp_path):
	path = str(tmp_path / "zone.sqlite")
	moment = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
	with start_in_thread(Store(path), CollectorSettings()) as running:
		(item_id,) = post_envelope(running.url, b"{}\n" + event_item({"message": "m", "timestamp": moment.timestamp()}))
	environment = dict(os.environ, TZ="Asia/Kolkata", NO_COLOR="1")
	shown = subprocess.run(
		[sys.executable, "-m", "asab_sentry.cli", "events", "--storage", path, "show", str(item_id)],
		capture_output=True,
		text=True,
		env=environment,
		timeout=60,
	).stdout
	assert "time:        2024-05-01 17:30:00.000 IST (+05:30)" in shown
	listed = subprocess.run(
		[sys.executable, "-m", "asab_sentry.cli", "events", "--storage", path, "list"],
		capture_output=True,
		text=True,
		env=environment,
		timeout=60,
	).stdout
	assert listed.splitlines()[0].rstrip().endswith("times: IST")


def test_parse_time():
	now = 1_700_000_000.0
	assert parse_time("15m", now) == now - 900
	assert parse_time("2h", now) == now - 7200
	assert parse_time("1d", now) == now - 86400
	assert parse_time("90s", now) == now - 90
	assert parse_time("1700000000") == 1_700_000_000.0
	assert (
		parse_time("2024-05-01T12:00:00Z")
		== datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.timezone.utc).timestamp()
	)
	assert parse_time("2024-05-01") == datetime.datetime(2024, 5, 1).astimezone().timestamp()
	with pytest.raises(ValueError, match="15m"):
		parse_time("yesterday")


def test_list_since_relative_and_iso(tmp_path, capsys):
	path = str(tmp_path / "since.sqlite")
	store = Store(path)
	from asab_sentry.collector.envelope import parse_envelope

	now = time.time()
	for title, age in (("two hours old", 7200), ("five minutes old", 300)):
		store.add(parse_envelope(b"{}\n" + event_item({"message": title})), "1", received=now - age)
	store.close()

	def titles(*args):
		code, out, err = cli(capsys, "events", "--storage", path, "--json", "list", *args)
		assert code == 0, err
		return [i["title"] for i in json.loads(out)]

	assert titles() == ["two hours old", "five minutes old"]
	assert titles("--since", "15m") == ["five minutes old"]
	assert titles("--since", "3h", "--until", "1h") == ["two hours old"]
	an_hour_ago = datetime.datetime.fromtimestamp(now - 3600).strftime("%Y-%m-%dT%H:%M:%S")
	assert titles("--since", an_hour_ago) == ["five minutes old"]
	code, out, err = cli(capsys, "events", "--storage", path, "list", "--since", "yesterday")
	assert code == 2 and "--since" in err and "15m" in err


def test_show_check_ins_logs_attachments_and_v2_spans(tmp_path, capsys, referee):
	"""What official SDKs send besides events, as stored by the collector, shown for a terminal."""
	import sentry_sdk
	import sentry_sdk.logger
	from sentry_sdk.crons import monitor

	from asab_sentry import _sdk
	from ui_data import LOGS_ON

	path = str(tmp_path / "other.sqlite")
	with start_in_thread(Store(path), CollectorSettings()) as running:
		running.Collector.Listeners.append(referee.check_collector_envelope)
		sentry_sdk.init(dsn=running.dsn, release="shop@2", environment="dev", **LOGS_ON)
		try:

			@monitor(monitor_slug="nightly")
			def job():
				pass

			job()
			sentry_sdk.logger.warning("disk {pct}% full \x1b]0;title\x07", pct=93)
			with sentry_sdk.new_scope() as scope:
				scope.add_attachment(bytes=b"\x00\xffbin", filename="dump.bin")
				scope.add_attachment(bytes=b"line one\nline two \x1b[2J", filename="notes.txt")
				sentry_sdk.capture_message("with files")
			sentry_sdk.flush(10)
		finally:
			_sdk.reset()
		start = 1_700_000_000.0
		spans = {
			"items": [
				{
					"trace_id": "a" * 32,
					"span_id": "1" * 16,
					"name": "GET /orders",
					"is_segment": True,
					"start_timestamp": start,
					"end_timestamp": start + 1.0,
					"status": "ok",
					"attributes": {"sentry.op": {"type": "string", "value": "http.server"}},
				},
				{
					"trace_id": "a" * 32,
					"span_id": "2" * 16,
					"parent_span_id": "1" * 16,
					"name": "SELECT orders",
					"start_timestamp": start + 0.5,
					"end_timestamp": start + 1.0,
					"status": "ok",
					"attributes": {"sentry.op": {"type": "string", "value": "db"}},
				},
			]
		}
		body = json.dumps(spans).encode()
		envelope = (
			b'{}\n{"type":"span","item_count":2,"content_type":"application/vnd.sentry.items.span.v2+json","length":%d}\n%s\n'
			% (len(body), body)
		)
		post_envelope(running.url, envelope)

	def show(item_type, **filters):
		store = Store(path)
		types = ("log", "otel_log") if item_type == "log" else (item_type,)  # otel_log: sentry-sdk before 2.28
		(item,) = [i for i in store.list(limit=100, **filters) if i["type"] in types][:1]
		code, out, _ = cli(capsys, "events", "--storage", path, "show", str(item["id"]))
		assert code == 0 and "\x1b" not in out
		return out

	out = show("check_in")
	assert "monitor:      nightly" in out and "status:" in out
	out = show("log")
	assert re.search(r"warn(ing)? +disk 93% full", out), out
	binary = show("attachment", text="dump.bin")
	assert "size:         5 bytes" in binary and "binary" in binary and "/attachment" in binary
	text = show("attachment", text="notes.txt")
	assert "line one\nline two" in text
	out = show("span")
	rows = [line for line in out.splitlines() if "█" in line]
	assert rows[0].startswith("GET /orders") and "db SELECT orders" in rows[1]
	assert rows[1].index("█") > rows[0].index("█") + 10  # starts half-way


def test_list_dates_items_not_from_today(tmp_path, capsys, monkeypatch):
	from asab_sentry.collector.envelope import parse_envelope

	monkeypatch.setenv("NO_COLOR", "1")
	path = str(tmp_path / "dates.sqlite")
	store = Store(path)
	old = time.time() - 3 * 86400
	store.add(parse_envelope(b"{}\n" + event_item({"message": "three days old"})), "1", received=old)
	store.close()
	code, out, _ = cli(capsys, "events", "--storage", path, "list")
	line = next(line for line in out.splitlines() if "three days old" in line)
	assert datetime.datetime.fromtimestamp(old).strftime("%m-%d %H:%M") in line
	assert len(line) <= 80


def test_tail_since_shows_recent_items_first(tmp_path):
	from asab_sentry.collector.envelope import parse_envelope

	path = str(tmp_path / "tail.sqlite")
	store = Store(path)
	now = time.time()
	for title, age in (("two hours old", 7200), ("five minutes old", 300)):
		store.add(parse_envelope(b"{}\n" + event_item({"message": title})), "1", received=now - age)
	store.close()
	tail = subprocess.Popen(
		[sys.executable, "-m", "asab_sentry.cli", "events", "--storage", path, "tail", "--since", "1h"],
		stdout=subprocess.PIPE,
		text=True,
		env=dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1"),
	)
	watchdog = threading.Timer(30, tail.kill)  # a silent tail must not hang the suite: readline() then ends
	watchdog.start()
	try:
		assert tail.stdout.readline().split()[:2] == ["ID", "TIME"]
		assert "five minutes old" in tail.stdout.readline()
	finally:
		watchdog.cancel()
		tail.kill()
		tail.wait()
	bad = subprocess.run(
		[sys.executable, "-m", "asab_sentry.cli", "events", "--storage", path, "tail", "--since", "soon"],
		capture_output=True,
		text=True,
		timeout=60,
	)
	assert bad.returncode == 2 and "--since" in bad.stderr
