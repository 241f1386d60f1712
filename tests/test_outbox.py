"""
The outbox (``[sentry] outbox = DIR``): envelopes on disk until Sentry accepted them, over real HTTP.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope

from asab_sentry.delivery import DeliveryOptions, DeliveryTransport, OutboxLocked
from asab_sentry.delivery import outbox as outbox_module
from faultserver import FaultServer
from test_delivery import delivery_warnings, messages, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = {"retry_initial": 0.05, "retry_max": 0.3, "drain_interval": 0.01, "drain_start_jitter": 0.0}


@pytest.fixture
def server():
	s = FaultServer()
	try:
		yield s
	finally:
		sentry_sdk.get_client().close(timeout=0.5)
		s.close()


def start(server: FaultServer, directory, **options) -> DeliveryTransport:
	options = {**FAST, **options}
	transport = DeliveryTransport(
		{"dsn": server.dsn, "send_client_reports": True}, DeliveryOptions(outbox=str(directory), **options)
	)
	sentry_sdk.init(dsn=server.dsn, transport=transport, default_integrations=False)
	return transport


def envelope_body(text: str) -> bytes:
	envelope = Envelope()
	envelope.add_event({"message": text, "level": "error", "platform": "python"})
	return gzip.compress(envelope.serialize())


def outbox_files(directory) -> list[str]:
	return sorted(n for n in os.listdir(directory) if n.endswith(outbox_module.SUFFIX))


CHILD = r"""
import asyncio, sys, asab, asab_sentry
asab.Config.read_dict({"sentry": {"data_source_name": sys.argv[1], "outbox": sys.argv[2]}})
class App(asab.Application):
	def __init__(self):
		super().__init__(args=[])
		self.S = asab_sentry.SentryService(self)
	async def main(self):
		if sys.argv[3] == "burst":
			for i in range(100000):
				self.S.capture_message("row %d" % i)
				print(i, flush=True)  # capture returned: the envelope is in the outbox
				await asyncio.sleep(0.001)
		while self.S.Delivery.pending():
			await asyncio.sleep(0.05)
		self.stop()
App().run()
"""


def test_kill_9_mid_burst_then_restart_delivers_everything(server, tmp_path):
	outbox = tmp_path / "outbox"
	server.down()
	child = subprocess.Popen(
		[sys.executable, "-c", CHILD, server.dsn, str(outbox), "burst"],
		stdout=subprocess.PIPE,
		stderr=subprocess.DEVNULL,
		text=True,
		cwd=REPO,
	)
	captured = -1
	try:
		for line in child.stdout:
			captured = int(line)
			if captured >= 30:
				break
	finally:
		child.send_signal(signal.SIGKILL)
		rest = child.communicate(timeout=30)[0]
	captured = max([captured] + [int(x) for x in rest.split()])
	# Files 0600 in a 0700 directory: events carry local variables.
	assert stat.S_IMODE(os.stat(outbox).st_mode) == 0o700
	names = outbox_files(outbox)
	assert len(names) >= captured + 1
	assert {stat.S_IMODE(os.stat(outbox / n).st_mode) for n in names} == {0o600}

	server.up()
	again = subprocess.run(
		[sys.executable, "-c", CHILD, server.dsn, str(outbox), "restart"],
		capture_output=True,
		text=True,
		timeout=120,
		cwd=REPO,
	)
	assert again.returncode == 0, again.stderr
	assert {"row {}".format(i) for i in range(captured + 1)} <= set(messages(server))
	assert outbox_files(outbox) == []


def test_two_processes_cannot_share_an_outbox(server, tmp_path):
	outbox = tmp_path / "shared"
	start(server, outbox)  # this process holds it
	other = subprocess.run(
		[sys.executable, "-c", CHILD, server.dsn, str(outbox), "restart"],
		capture_output=True,
		text=True,
		timeout=60,
		cwd=REPO,
	)
	assert other.returncode != 0
	last = other.stderr.strip().splitlines()[-1]
	assert last.startswith("[sentry] outbox = '{}'".format(outbox))
	assert "in use by another process (pid {})".format(os.getpid()) in last


def test_second_outbox_in_one_process_is_refused(tmp_path):
	first = outbox_module.Outbox(str(tmp_path), 10**6, 60)
	try:
		with pytest.raises(OutboxLocked, match=str(tmp_path)):
			outbox_module.Outbox(str(tmp_path), 10**6, 60)
	finally:
		first.close()
	outbox_module.Outbox(str(tmp_path), 10**6, 60).close()  # released: usable again


def test_outbox_size_limit_removes_the_oldest_counts_and_warns_once(server, tmp_path, caplog):
	server.down()
	one = len(envelope_body("x" * 10))
	transport = start(server, tmp_path, outbox_max_size=2000)
	for i in range(20):
		sentry_sdk.capture_message("m{}".format(i), extras={"pad": "y" * 200})
	dropped = transport.Losses.Counters["dropped_outbox_full"]
	assert dropped > 0 and one > 0
	assert transport.Outbox.Size <= 2000
	assert sum(os.stat(tmp_path / n).st_size for n in outbox_files(tmp_path)) <= 2000
	said = delivery_warnings(caplog)
	assert len(said) == 1 and "outbox_max_size" in said[0]
	server.up()
	assert wait_for(lambda: transport.pending() == 0)
	# The newest were kept.
	assert sorted(messages(server), key=lambda m: int(m[1:])) == ["m{}".format(i) for i in range(dropped, 20)]


def test_corrupt_and_truncated_files_are_moved_aside_and_reported(server, tmp_path, caplog):
	keeper = outbox_module.Outbox(str(tmp_path), 10**6, 86400)
	good, _ = keeper.write(envelope_body("good"))
	truncated, _ = keeper.write(envelope_body("truncated " + "z" * 300))
	keeper.close()
	with open(truncated.path, "r+b") as f:
		f.truncate(truncated.size // 2)
	garbage = tmp_path / "{:020d}-1-00000000{}".format(time.time_ns(), outbox_module.SUFFIX)
	garbage.write_bytes(b"not an envelope")

	transport = start(server, tmp_path)
	assert wait_for(lambda: transport.pending() == 0)
	assert messages(server) == ["good"]
	assert transport.Losses.Counters["dropped_corrupt"] == 2
	assert sorted(os.listdir(tmp_path / "corrupt")) == sorted([os.path.basename(truncated.path), garbage.name])
	said = delivery_warnings(caplog)
	assert len(said) == 1 and "unreadable outbox files" in said[0] and str(tmp_path / "corrupt") in said[0]


def test_files_older_than_max_age_are_dropped_at_start(server, tmp_path):
	old = tmp_path / "{:020d}-1-00000000{}".format(time.time_ns() - 3600 * 10**9, outbox_module.SUFFIX)
	os.makedirs(tmp_path, exist_ok=True)
	old.write_bytes(envelope_body("an hour old"))
	transport = start(server, tmp_path, outbox_max_age=60)
	sentry_sdk.capture_message("fresh")
	assert wait_for(lambda: transport.pending() == 0)
	assert messages(server) == ["fresh"]
	assert transport.Losses.Counters["dropped_too_old"] == 1
	assert outbox_files(tmp_path) == []


def test_cached_envelopes_are_paced(server, tmp_path):
	keeper = outbox_module.Outbox(str(tmp_path), 10**6, 86400)
	for i in range(8):
		keeper.write(envelope_body("cached {}".format(i)))
	keeper.close()
	transport = start(server, tmp_path, drain_interval=0.2)
	assert wait_for(lambda: transport.pending() == 0)
	times = [r.At for r in server.Requests]
	assert len(times) == 8
	# 7 gaps of at least half the interval (the jitter is 0.5x..1.5x): at least 0.7 s from first to last, however
	# fast the machine (0.2 s of margin for the first request's connection); unpaced, they all go at once.
	assert times[-1] - times[0] >= 0.5


def test_outbox_is_written_before_capture_returns(server, tmp_path):
	server.down()
	start(server, tmp_path)
	sentry_sdk.capture_message("on disk")
	(name,) = outbox_files(tmp_path)
	envelope = outbox_module.decode((tmp_path / name).read_bytes())
	assert envelope.get_event()["message"] == "on disk"


def test_status_of_an_outbox(tmp_path):
	keeper = outbox_module.Outbox(str(tmp_path), 10**6, 86400)
	keeper.write(envelope_body("one"))
	status = outbox_module.status(str(tmp_path))
	assert status["envelopes"] == 1 and status["locked_by"] == str(os.getpid())
	keeper.close()
	assert outbox_module.status(str(tmp_path))["locked_by"] is None


def _filled(directory, count: int) -> None:
	keeper = outbox_module.Outbox(str(directory), 10**6, 86400)
	for i in range(count):
		keeper.write(envelope_body("kept {}".format(i)))
	keeper.close()


def test_cli_outbox_status_flush_purge(server, tmp_path, capsys):
	from asab_sentry import cli

	_filled(tmp_path, 5)
	assert cli.main(["outbox", "status", "--json", str(tmp_path)]) == 0
	assert json.loads(capsys.readouterr().out)["envelopes"] == 5

	assert cli.main(["outbox", "flush", "--dsn", server.dsn, "--interval", "0.01", str(tmp_path)]) == 0
	out, err = capsys.readouterr()
	assert "5 of 5 envelope(s) sent; 0 left in {}.".format(tmp_path) in out
	assert "5/5" in err  # the progress bar
	assert sorted(messages(server)) == ["kept {}".format(i) for i in range(5)]
	assert outbox_files(tmp_path) == []

	_filled(tmp_path, 3)
	assert cli.main(["outbox", "purge", str(tmp_path)]) == 0
	assert "Removed 3 envelope(s)" in capsys.readouterr().out
	assert outbox_files(tmp_path) == []


def test_cli_outbox_flush_refuses_an_outbox_in_use(server, tmp_path, capsys):
	from asab_sentry import cli

	_filled(tmp_path, 1)
	holder = outbox_module.Outbox(str(tmp_path), 10**6, 86400)
	try:
		assert cli.main(["outbox", "flush", "--dsn", server.dsn, str(tmp_path)]) == 1
		assert cli.main(["outbox", "purge", str(tmp_path)]) == 1
	finally:
		holder.close()
	err = capsys.readouterr().err
	assert "in use by another process (pid {}); stop it first".format(os.getpid()) in err
	assert len(outbox_files(tmp_path)) == 1


def test_cli_outbox_leaves_a_directory_that_is_not_an_outbox_alone(server, tmp_path, capsys):
	"""A mistyped path (the service's data directory instead of its outbox): no chmod, no .lock, no rmtree."""
	from asab_sentry import cli

	data = tmp_path / "data"
	(data / "corrupt").mkdir(parents=True)
	(data / "corrupt" / "precious.txt").write_text("keep me")
	(data / "notes.txt").write_text("keep me too")
	data.chmod(0o755)
	assert cli.main(["outbox", "purge", str(data)]) == 1
	assert cli.main(["outbox", "flush", "--dsn", server.dsn, str(data)]) == 1
	assert "{} is not an outbox".format(data) in capsys.readouterr().err
	assert (data / "corrupt" / "precious.txt").read_text() == "keep me"
	assert sorted(os.listdir(data)) == ["corrupt", "notes.txt"]
	assert stat.S_IMODE(data.stat().st_mode) == 0o755


def test_service_refuses_an_outbox_directory_holding_other_files(tmp_path):
	"""[sentry] outbox = a data directory by mistake: start-up stops with one line; the directory is untouched."""
	import asab

	import asab_sentry
	from asab_sentry import SentryConfigError

	data = tmp_path / "data"
	data.mkdir()
	(data / ".tmp-notes").write_text("keep me")
	data.chmod(0o755)
	asab.Config.read_dict({"sentry": {"data_source_name": "http://k@127.0.0.1:9/1", "outbox": str(data)}})
	with pytest.raises(SentryConfigError) as info:
		asab_sentry.SentryService(asab.Application(args=[]))
	assert "[sentry] outbox = '{}'".format(data) in str(info.value) and "never an outbox" in str(info.value)
	assert os.listdir(data) == [".tmp-notes"] and stat.S_IMODE(data.stat().st_mode) == 0o755
	# An empty directory, or one that is already an outbox, is taken.
	empty = tmp_path / "empty"
	empty.mkdir()
	asab.Config.read_dict({"sentry": {"outbox": str(empty)}})
	asab_sentry.SentryService(asab.Application(args=[]), "SentryService2")
	assert stat.S_IMODE(empty.stat().st_mode) == 0o700


DISK_FULL_CHILD = r"""
import logging, os, resource, sys
import asab, asab_sentry
asab.Config.read_dict({"sentry": {"data_source_name": sys.argv[1], "outbox": sys.argv[2], "shutdown_timeout": "1s"}})
class App(asab.Application):
	def __init__(self):
		super().__init__(args=[])
		self.S = asab_sentry.SentryService(self)
	async def main(self):
		logging.getLogger("x").error("fits %s", "x")  # compresses to far under the limit
		resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))  # a full disk (Python ignores SIGXFSZ)
		for i in range(5):
			logging.getLogger("x").error("big %d %s", i, os.urandom(20000).hex())  # gzip: ~10 kB, over it
		self.stop()
App().run()
"""


def test_outbox_disk_full_says_once_leaves_no_partial_files_and_counts_what_exit_drops(server, tmp_path):
	"""
	A disk full (a file-size limit): one warning, not one per envelope; the part-written temporary files are
	removed; the exit says how many envelopes could not be kept in the outbox and are dropped.
	"""
	outbox = tmp_path / "outbox"
	server.down()
	child = subprocess.run(
		[sys.executable, "-c", DISK_FULL_CHILD, server.dsn, str(outbox)],
		capture_output=True,
		text=True,
		timeout=120,
		cwd=REPO,
	)
	warnings = [line for line in child.stderr.splitlines() if "asab_sentry" in line]
	assert child.returncode == 0, warnings
	assert sum("Cannot write to the outbox" in line for line in warnings) == 1, warnings
	assert [n for n in os.listdir(outbox) if n.startswith(".tmp-")] == []
	said = re.search(
		r"(\d+) envelope\(s\) not delivered to Sentry at 127.0.0.1 within shutdown_timeout=1s: (\d+) kept in the "
		r"outbox (.+), sent at the next start; (\d+) dropped \(the outbox could not take them\)\.",
		child.stderr,
	)
	assert said is not None, warnings
	total, kept, where, dropped = int(said[1]), int(said[2]), said[3], int(said[4])
	assert where == str(outbox) and kept == len(outbox_files(outbox)) and dropped >= 1 and total == kept + dropped
