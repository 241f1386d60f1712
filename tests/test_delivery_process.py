"""
The delivery process (``[sentry] delivery = process``, asab_sentry.delivery.process): a real helper process, real
HTTP on 127.0.0.1 (tests/faultserver.py), the service's counters, lines and exit as with the in-process delivery.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import sentry_sdk

from asab_sentry import SentryConfigError
from asab_sentry.delivery import DeliveryOptions
from asab_sentry.delivery import process as process_module
from asab_sentry.delivery.process import ProcessDelivery
from asab_sentry.logging import NO_EVENT
from faultserver import FaultServer
from helpers import App, configure, run_app

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_RETRY = {"retry_initial": 0.05, "retry_max": 0.3}


@pytest.fixture
def server():
	s = FaultServer()
	try:
		yield s
	finally:
		sentry_sdk.get_client().close(timeout=0.5)  # stop sending (and the delivery process) before the server goes
		s.close()


def start(server: FaultServer, **options) -> ProcessDelivery:
	"""sentry-sdk's real client with the process delivery, sending to the fault server."""
	transport = ProcessDelivery({"dsn": server.dsn, "send_client_reports": True}, DeliveryOptions(**options))
	sentry_sdk.init(dsn=server.dsn, transport=transport, default_integrations=False, traces_sample_rate=1.0)
	return transport


def wait_for(condition, timeout: float = 30.0) -> bool:
	deadline = time.monotonic() + timeout
	while not condition():
		if time.monotonic() > deadline:
			return False
		time.sleep(0.02)
	return True


def messages(server: FaultServer) -> list[str]:
	return [e.get("message") or e.get("logentry", {}).get("message") for e in server.events()]


def delivery_lines(caplog) -> list[str]:
	return [r.getMessage() for r in caplog.records if r.name == "asab_sentry.delivery" and r.levelno >= logging.WARNING]


def gone(pid: int) -> bool:
	"""The process ended (a zombie not reaped yet counts as ended)."""
	try:
		with open("/proc/{}/stat".format(pid)) as f:
			return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
	except FileNotFoundError:
		return True


def test_an_asab_service_delivers_through_its_delivery_process(server):
	"""``[sentry] delivery = process``: every error of a burst arrives; the process ends with the service."""
	configure({"sentry": {"data_source_name": server.dsn, "delivery": "process"}})
	seen = {}

	async def burst(app):
		seen["pid"] = app.SentryService.Delivery.Pid
		for row in range(300):
			logging.getLogger("importer").error("Row %d rejected", row)

	app = run_app(burst, App)
	delivery = app.SentryService.Delivery
	assert isinstance(delivery, ProcessDelivery) and seen["pid"] not in (None, os.getpid())
	sentry_sdk.get_client().close(timeout=5)  # the exit's kill
	assert delivery.Losses.Counters["sent"] == 300 and delivery.Losses.Counters["captured"] == 300
	assert len({e["logentry"]["params"][0] for e in server.events()}) == 300
	assert wait_for(lambda: gone(seen["pid"]), timeout=10)


def test_metrics_count_what_the_delivery_process_did(server):
	import asab.metrics

	configure({"sentry": {"data_source_name": server.dsn, "delivery": "process"}, "asab:metrics": {"target": ""}})

	async def body(app):
		app.SentryService.capture_message("counted")
		await app.Loop.run_in_executor(None, app.SentryService.Delivery.flush, 10)
		server.Status = 413
		app.SentryService.capture_message("rejected")
		await app.Loop.run_in_executor(None, app.SentryService.Delivery.flush, 10)
		app.SentryService.DeliveryMetrics.update()
		app.Values = dict(app.SentryService.DeliveryMetrics.Counters.Storage["fieldset"][0]["values"])
		app.Queue = dict(app.SentryService.DeliveryMetrics.Queue.Storage["fieldset"][0]["values"])

	class WithMetrics(App):
		def __init__(self):
			super().__init__()
			self.add_module(asab.metrics.Module)

	app = run_app(body, WithMetrics)
	assert app.Values["captured"] == 2 and app.Values["sent"] == 1 and app.Values["dropped_rejected_413"] == 1
	assert app.Queue == {"items": 0, "bytes": 0}


def test_flush_waits_until_the_delivery_process_delivered(server):
	server.Delay = 0.05
	transport = start(server)
	for i in range(40):
		sentry_sdk.capture_message("m{}".format(i))
	assert transport.pending() > 0
	transport.flush(30)
	assert sorted(messages(server)) == sorted("m{}".format(i) for i in range(40))
	assert transport.pending() == 0 and transport.Losses.Counters["sent"] == 40


@pytest.mark.parametrize("stopped", [False, True])
def test_flush_returns_at_its_timeout(server, stopped):
	"""A flush that cannot complete (the endpoint never answers, or the delivery process is stopped) returns at
	its timeout, as the in-process flush does."""
	server.Delay = 60.0
	transport = start(server, request_timeout=30.0)
	assert wait_for(lambda: transport._child.Ready)
	sentry_sdk.capture_message("stuck")
	if stopped:
		os.kill(transport.Pid, signal.SIGSTOP)
	try:
		started = time.monotonic()
		transport.flush(1.0)
		took = time.monotonic() - started
	finally:
		if stopped:
			os.kill(transport.Pid, signal.SIGCONT)
	assert 0.9 <= took < 1.0 + 3.0  # a slow machine's margin; it does not wait for the answer beyond it
	assert transport.pending() == 1


def test_shutdown_counts_and_says_once_what_was_not_delivered(server, caplog):
	server.Delay = 60.0  # never answers within the test
	transport = start(server, request_timeout=30.0, shutdown_timeout=1.0)
	for i in range(7):
		sentry_sdk.capture_message("stuck {}".format(i))
	started = time.monotonic()
	assert transport.shutdown() == 7
	assert time.monotonic() - started < 1.0 + 5.0  # the exit deadline, plus a slow machine's margin
	transport.kill()
	assert transport.Losses.Counters["dropped_shutdown"] == 7
	said = [line for line in delivery_lines(caplog) if "not delivered" in line]
	assert said == [
		"7 envelope(s) not delivered to Sentry at 127.0.0.1 within shutdown_timeout=1s: dropped (no [sentry] outbox)."
	]
	assert all(getattr(r, NO_EVENT, False) for r in caplog.records if r.name.startswith("asab_sentry"))


def test_rate_limit_is_honoured_by_the_delivery_process(server):
	state = {"done": False}

	def behaviour(request):
		if not state["done"]:
			state["done"] = True
			return 429, {"Retry-After": "2"}
		return 200, {}

	server.Behaviour = behaviour
	transport = start(server)
	sentry_sdk.capture_message("first")
	assert wait_for(transport.RateLimits.any_active)  # the delivery process read the 429 and told the service
	limited_at = server.Requests[0].At
	for i in range(10):
		sentry_sdk.capture_message("waiting {}".format(i))
	server.wait_events(11)
	assert sorted(messages(server)) == sorted(["first"] + ["waiting {}".format(i) for i in range(10)])
	inside = [r for r in server.Requests[1:] if limited_at + 0.3 < r.At < limited_at + 1.7]
	assert inside == []
	assert transport.Losses.Counters["rate_limited"] == 1


def test_drops_are_counted_and_said_once_by_the_service_and_reported_to_sentry(server, caplog):
	transport = start(server)
	server.Status = 413
	for i in range(3):
		sentry_sdk.capture_message("too big {}".format(i))
	assert wait_for(lambda: transport.Losses.Counters["dropped_rejected_413"] == 3)
	said = delivery_lines(caplog)
	assert len(said) == 1 and "HTTP 413" in said[0] and "Sentry at 127.0.0.1" in said[0]
	assert all(getattr(r, NO_EVENT, False) for r in caplog.records if r.name.startswith("asab_sentry"))
	server.Status = 200
	transport.flush(10)
	assert wait_for(lambda: server.client_reports())
	discarded = [d for r in server.client_reports() for d in r["discarded_events"]]
	assert {"reason": "send_error", "category": "error", "quantity": 3} in discarded


def test_the_services_own_losses_reach_sentry_through_the_delivery_process(server):
	transport = start(server)
	transport.record_lost_event("before_send", data_category="error", quantity=2)
	transport.flush(10)
	assert wait_for(lambda: server.client_reports())
	discarded = [d for r in server.client_reports() for d in r["discarded_events"]]
	assert {"reason": "before_send", "category": "error", "quantity": 2} in discarded


def test_a_killed_delivery_process_is_said_counted_and_replaced(server, caplog):
	transport = start(server)
	sentry_sdk.capture_message("before")
	transport.flush(30)
	assert wait_for(lambda: transport.Pid is not None and transport._child.Ready)
	first = transport.Pid
	server.Delay = 60.0  # what it holds when killed is not delivered
	sentry_sdk.capture_message("held")
	assert wait_for(lambda: transport._child.Received == 2 and transport._child.Pending == 1)
	os.kill(first, signal.SIGKILL)
	assert wait_for(lambda: transport.Pid not in (None, first))
	said = [line for line in delivery_lines(caplog) if "ended unexpectedly" in line]
	assert said == [
		"The Sentry delivery process (pid {}) ended unexpectedly (killed by signal 9); 1 envelope(s) it had not "
		"delivered are lost; a new one takes over.".format(first)
	]
	assert transport.Losses.Counters["dropped_process_ended"] == 1
	server.Delay = 0.0
	for i in range(20):
		sentry_sdk.capture_message("after {}".format(i))
	transport.flush(30)
	assert {"after {}".format(i) for i in range(20)} <= set(messages(server))
	assert transport.Fallback is None


def test_a_delivery_process_that_cannot_run_falls_back_to_threads(server, caplog, monkeypatch):
	# It reads nothing and ends after a while: what was written into its pipe meanwhile is not lost.
	code = "import time; time.sleep(2); raise SystemExit(3)"
	monkeypatch.setattr(process_module, "_child_command", lambda root: [sys.executable, "-c", code])
	transport = start(server)
	for i in range(10):
		sentry_sdk.capture_message("m{}".format(i))
	assert wait_for(lambda: transport._child is not None and transport._child.Written >= 10, timeout=1.5)
	assert wait_for(lambda: transport.Fallback is not None)
	transport.flush(30)
	assert sorted(messages(server)) == sorted("m{}".format(i) for i in range(10))
	said = [line for line in delivery_lines(caplog) if "delivery process" in line]
	assert len(said) == 1 and "(exit code 3)" in said[0] and "continues in the service's own threads" in said[0]
	assert transport.Losses.Counters["sent"] == 10  # one set of counters


PARENT = r"""
import os, sys, time
sys.path.insert(0, {tests!r})
from asab_sentry.delivery import DeliveryOptions
from asab_sentry.delivery.process import ProcessDelivery
t = ProcessDelivery({{"dsn": sys.argv[1]}}, DeliveryOptions(shutdown_timeout=1.0))
deadline = time.monotonic() + 30
while not (t._child.Ready or time.monotonic() > deadline):
	time.sleep(0.02)
print(t.Pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["kill -9", "exit without kill"])
def test_the_delivery_process_ends_when_the_service_dies(server, how):
	code = PARENT.format(tests=os.path.dirname(__file__))
	if how == "exit without kill":
		code = code.replace("time.sleep(60)", "os._exit(0)")
	parent = subprocess.Popen(
		[sys.executable, "-c", code, server.dsn], stdout=subprocess.PIPE, text=True, cwd=REPO, env=_env()
	)
	try:
		pid = int(parent.stdout.readline())
		assert not gone(pid)
		if how == "kill -9":
			parent.kill()
		parent.wait(timeout=30)
		assert wait_for(lambda: gone(pid), timeout=1.0 + 10.0)  # shutdown_timeout, then it ends
	finally:
		parent.kill()
		parent.wait()


def test_ctrl_c_or_sigterm_to_the_process_group_does_not_end_it(server, caplog):
	"""The service decides when its delivery process ends (Ctrl-C and systemd's stop reach every process)."""
	transport = start(server)
	assert wait_for(lambda: transport._child.Ready)
	pid = transport.Pid
	os.kill(pid, signal.SIGINT)
	os.kill(pid, signal.SIGTERM)
	sentry_sdk.capture_message("still here")
	transport.flush(30)
	assert messages(server) == ["still here"] and transport.Pid == pid
	assert not [line for line in delivery_lines(caplog) if "ended unexpectedly" in line]


def test_the_exit_waits_once_and_says_what_it_dropped_with_the_delivery_process():
	"""As tests/test_delivery.py's exit test: finalize and sentry-sdk's atexit together wait shutdown_timeout."""
	from test_delivery import EXIT_CHILD

	code = EXIT_CHILD.replace('"shutdown_timeout": "2s"', '"shutdown_timeout": "2s", "delivery": "process"')
	assert code != EXIT_CHILD
	out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO, env=_env())
	(took,) = [float(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("exit ")]
	said = [line for line in (out.stdout + out.stderr).splitlines() if "not delivered" in line]
	assert len(said) == 1, out.stderr
	assert "20 envelope(s) not delivered" in said[0] and "shutdown_timeout=2s: dropped" in said[0]
	assert took < 2 * 2.0
	assert "ended unexpectedly" not in out.stderr


def _env() -> dict[str, str]:
	env = dict(os.environ)
	env["PYTHONPATH"] = os.path.join(REPO, "src") + os.pathsep + env.get("PYTHONPATH", "")
	return env


def test_memory_stays_bounded_while_the_endpoint_never_answers(server, caplog):
	"""The service holds at most 4 x queue_max_size bytes (its feed) and the delivery process its own bounds."""
	server.Delay = 60.0
	bound = 60_000
	transport = start(server, queue_max_size=bound, max_concurrent_requests=1, request_timeout=30.0)
	assert wait_for(lambda: transport._child.Ready)
	os.kill(transport.Pid, signal.SIGSTOP)  # it reads nothing more: the service's feed fills
	try:
		for i in range(1200):
			sentry_sdk.capture_message("m{}".format(i), extras={"pad": os.urandom(300).hex()})
			assert transport._feed_bytes <= 4 * bound
		assert transport.Losses.Counters["dropped_queue_full"] > 0
	finally:
		os.kill(transport.Pid, signal.SIGCONT)
	assert wait_for(lambda: transport.pending() == transport._child.Pending and transport._feed_bytes == 0)
	assert transport.QueuedBytes <= 2 * bound
	said = [line for line in delivery_lines(caplog) if "queue_max_size" in line]
	assert len(said) == 1  # the service's drops and the delivery process's: one line a minute for the reason


@pytest.mark.parametrize(
	"config, message",
	[
		("[sentry]\ndelivery = fast\n", "[sentry] delivery = 'fast': expected one of: threads, process"),
		(
			"[sentry]\ndelivery = process\noutbox = /tmp/outbox\n",
			"[sentry] delivery = 'process': not with [sentry] outbox",
		),
	],
)
def test_invalid_delivery_mode_is_one_clear_line(config, message):
	import configparser

	from asab_sentry.settings import load_settings

	parser = configparser.ConfigParser(interpolation=None)
	parser.read_string(config)
	with pytest.raises(SentryConfigError) as e:
		load_settings(parser, {"SENTRY_DSN": "https://k@localhost/1"})
	assert str(e.value).startswith(message) and "\n" not in str(e.value)


# Review findings (each test failed before its fix)


def test_a_late_flush_answer_does_not_answer_a_later_shutdown(server):
	"""A flush that gave up (its delivery process was stopped) is answered later: that answer must not end the exit's
	shutdown, which would then drop what the delivery process was about to deliver."""
	server.Delay = 2.0
	transport = start(server, request_timeout=30.0, shutdown_timeout=20.0)
	sentry_sdk.capture_message("slow")
	assert wait_for(lambda: transport._child.Ready and transport._child.Received == 1)
	os.kill(transport.Pid, signal.SIGSTOP)
	try:
		transport.flush(0.3)  # gives up; its command waits in the pipe
	finally:
		os.kill(transport.Pid, signal.SIGCONT)
	assert transport.shutdown() == 0
	assert messages(server) == ["slow"] and transport.Losses.Counters["sent"] == 1


@pytest.mark.parametrize("interpreter", ["sys.executable is None", "sys.executable is empty", "frozen application"])
def test_no_python_interpreter_to_start_falls_back_to_threads(server, caplog, monkeypatch, interpreter):
	"""Embedded interpreters (sys.executable None or empty) and frozen applications (sys.executable is the
	application: ``-c`` would start the service again): the delivery runs in the service's threads, said once."""
	if interpreter == "frozen application":
		monkeypatch.setattr(sys, "frozen", True, raising=False)
	else:
		monkeypatch.setattr(sys, "executable", None if "None" in interpreter else "")
	transport = start(server)
	assert transport.Fallback is not None and transport.Pid is None
	sentry_sdk.capture_message("delivered anyway")
	transport.flush(30)
	assert messages(server) == ["delivered anyway"]
	said = [line for line in delivery_lines(caplog) if "delivery process" in line]
	assert len(said) == 1 and "cannot start" in said[0] and "continues in the service's own threads" in said[0]


def test_a_delivery_process_that_never_gets_ready_is_ended_and_the_delivery_falls_back(server, caplog, monkeypatch):
	"""An interpreter that hangs at start (or a program that is not one) reads nothing and never ends: without a
	deadline nothing would ever be delivered."""
	monkeypatch.setattr(
		process_module, "_child_command", lambda root: [sys.executable, "-c", "import time; time.sleep(600)"]
	)
	monkeypatch.setattr(process_module, "START_TIMEOUT", 1.0, raising=False)
	transport = start(server)
	pid = transport.Pid
	for i in range(10):
		sentry_sdk.capture_message("m{}".format(i))
	assert wait_for(lambda: transport.Fallback is not None, timeout=15)
	transport.flush(30)
	assert sorted(messages(server)) == sorted("m{}".format(i) for i in range(10))
	said = [line for line in delivery_lines(caplog) if "delivery process" in line]
	assert len(said) == 1 and "not ready within 1 s" in said[0] and "continues in the service's own threads" in said[0]
	assert wait_for(lambda: gone(pid), timeout=10)


def test_the_exit_counts_every_envelope_when_the_delivery_process_reads_nothing(server, caplog):
	"""The feeder's batch being written when the exit comes (the pipe full: the delivery process is stopped) was
	neither in the feed nor written: it was not counted. What the line says and what is counted must match."""
	transport = start(server, shutdown_timeout=1.0, request_timeout=30.0)
	assert wait_for(lambda: transport._child.Ready)
	child, counters = transport._child, transport.Losses.Counters
	os.kill(child.Process.pid, signal.SIGSTOP)
	try:
		for i in range(4000):
			sentry_sdk.capture_message("m{}".format(i), extras={"pad": os.urandom(300).hex()})
		# The feeder waits in a write (the pipe is full) with a batch out of the feed.
		assert wait_for(lambda: child.Written + len(transport._feed) + counters["dropped_queue_full"] < 4000)
		undelivered = transport.shutdown()
		transport.kill()
	finally:
		if child.Process.poll() is None:
			os.kill(child.Process.pid, signal.SIGCONT)
	assert undelivered == 4000 - counters["dropped_queue_full"]
	assert counters["dropped_shutdown"] == undelivered
	said = [line for line in delivery_lines(caplog) if "not delivered" in line]
	assert said == [
		"{} envelope(s) not delivered to Sentry at 127.0.0.1 within shutdown_timeout=1s: dropped (no [sentry] "
		"outbox).".format(undelivered)
	]


def test_the_exit_waits_for_a_stopped_delivery_process_once(server, monkeypatch):
	"""kill with a delivery process that reads nothing (stopped, hung) waited KILL_WAIT for its answer and then
	KILL_WAIT more for it to end: the exit lasted shutdown_timeout + 2 x KILL_WAIT."""
	monkeypatch.setattr(process_module, "KILL_WAIT", 3.0)
	transport = start(server, shutdown_timeout=0.5, request_timeout=30.0)
	assert wait_for(lambda: transport._child.Ready)
	child = transport._child
	os.kill(child.Process.pid, signal.SIGSTOP)
	try:
		sentry_sdk.capture_message("never read")
		assert transport.shutdown() == 1
		started = time.monotonic()
		transport.kill()
		took = time.monotonic() - started
	finally:
		if child.Process.poll() is None:
			os.kill(child.Process.pid, signal.SIGCONT)
	assert took < 3.0 + 2.0  # one KILL_WAIT, and a slow machine's margin
	assert child.Process.poll() is not None
	assert transport.Losses.Counters["dropped_shutdown"] == 1


FORKING = r"""
import json, os, sys, time, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a process with threads (Python 3.12+)
import sentry_sdk
from asab_sentry.delivery import DeliveryOptions
from asab_sentry.delivery.process import ProcessDelivery
dsn = sys.argv[1]
if sys.argv[2] == "fallen back":
	executable, sys.executable = sys.executable, None  # the delivery falls back to the service's threads
t = ProcessDelivery({"dsn": dsn}, DeliveryOptions(shutdown_timeout=5.0))
sentry_sdk.init(dsn=dsn, transport=t, default_integrations=False)
deadline = time.monotonic() + 30
while not (t.Fallback is not None or t._child.Ready or time.monotonic() > deadline):
	time.sleep(0.02)
pid = t.Pid
sentry_sdk.capture_message("before the fork")
t.flush(10)
worker = os.fork()
if worker == 0:
	sentry_sdk.capture_message("from the fork")
	sentry_sdk.get_client().close(timeout=5.0)  # what sentry-sdk's atexit hook does when the fork exits
	os._exit(0)
os.waitpid(worker, 0)
sentry_sdk.capture_message("after the fork")
t.flush(10)
print(json.dumps({"same": t.Pid == pid, "counters": dict(t.Losses.Counters)}), flush=True)
sentry_sdk.get_client().close(timeout=5.0)
"""


@pytest.mark.parametrize("mode", ["delivery process", "fallen back"])
def test_a_fork_of_the_service_neither_ends_its_delivery_process_nor_loses_its_events(server, mode):
	"""A service that forks workers (os.fork, multiprocessing's fork) after the delivery process started: the fork's
	exit (sentry-sdk's kill) ended the parent's delivery process, and what the fork captured waited for a feeder the
	fork does not have, then was dropped."""
	import json

	out = subprocess.run(
		[sys.executable, "-c", FORKING, server.dsn, mode],
		capture_output=True,
		text=True,
		timeout=120,
		cwd=REPO,
		env=_env(),
	)
	assert out.returncode == 0, out.stderr
	result = json.loads(out.stdout.splitlines()[-1])
	assert result["same"], out.stderr
	assert sorted(messages(server)) == ["after the fork", "before the fork", "from the fork"]
	assert "ended unexpectedly" not in out.stderr and "not delivered" not in out.stderr and "dropped" not in out.stderr
	assert result["counters"]["sent"] == 2  # the parent's; the fork counted its own


def test_sighup_to_the_process_group_does_not_end_it(server, caplog):
	"""A closed terminal (or ``kill -HUP -<group>``) reaches every process of the service; an asab Application
	catches SIGHUP and carries on, and the delivery process must too: it ended, losing what it held."""
	transport = start(server)
	assert wait_for(lambda: transport._child.Ready)
	pid = transport.Pid
	os.kill(pid, signal.SIGHUP)
	sentry_sdk.capture_message("still here")
	transport.flush(30)
	assert messages(server) == ["still here"] and transport.Pid == pid
	assert not [line for line in delivery_lines(caplog) if "ended unexpectedly" in line]


def test_a_flush_waits_for_what_the_ended_delivery_process_had_not_read(server):
	"""The delivery process ends with an envelope and a flush command unread in its pipe: the next one must get the
	envelope before the flush (the flush was put back first, answered at once, and returned before delivery)."""
	import threading

	server.Delay = 0.5
	transport = start(server)
	assert wait_for(lambda: transport._child.Ready)
	first = transport._child
	os.kill(first.Process.pid, signal.SIGSTOP)  # reads nothing more
	sentry_sdk.capture_message("unread")
	assert wait_for(lambda: first.Written == 1)
	done = threading.Event()
	flusher = threading.Thread(target=lambda: (transport.flush(30), done.set()))
	flusher.start()
	assert wait_for(lambda: transport._commands and transport._commands[0].Child is first)  # written to it
	os.kill(first.Process.pid, signal.SIGKILL)
	flusher.join(60)
	assert done.is_set() and messages(server) == ["unread"]
	assert transport.Pid not in (None, first.Process.pid) and transport.Fallback is None


def test_a_flush_being_written_when_the_end_is_seen_is_put_back_once_behind_the_unread_envelope(server):
	"""The race behind a flaky run: the feeder took the flush for the delivery process and waited to write it while the
	status thread saw the process end and put the unread envelope and the flush back; the failed write then put the
	flush back again, in front: the next delivery process answered it first and the flush returned before delivery."""
	import threading

	server.Delay = 0.5
	transport = start(server)
	assert wait_for(lambda: transport._child.Ready)
	first = transport._child
	os.kill(first.Process.pid, signal.SIGSTOP)
	sentry_sdk.capture_message("unread")
	assert wait_for(lambda: first.Written == 1)
	done = threading.Event()
	with transport._write_lock:  # the feeder takes the flush and waits here to write it
		flusher = threading.Thread(target=lambda: (transport.flush(30), done.set()))
		flusher.start()
		assert wait_for(lambda: transport._commands and transport._commands[0].Child is first)
		os.kill(first.Process.pid, signal.SIGKILL)
		assert wait_for(lambda: first.Ended)  # the status thread put the envelope and the flush back
	flusher.join(60)
	assert done.is_set() and messages(server) == ["unread"]
	assert transport.Pid not in (None, first.Process.pid) and transport.Fallback is None


def test_a_batch_put_back_when_the_end_is_seen_is_counted_once_by_the_exit(server, caplog):
	"""The feeder's batch (out of the feed, counted as in flight) is put back in the feed by the status thread that saw
	the delivery process end, while the feeder still waits to write it; the exit comes then: each envelope is counted
	once, in the feed (not a second time as the batch in flight)."""
	import threading

	transport = start(server, shutdown_timeout=1.0)
	assert wait_for(lambda: transport._child.Ready)
	first, counters = transport._child, transport.Losses.Counters
	killer = None
	with transport._write_lock:  # the feeder takes the envelope and waits here to write it
		sentry_sdk.capture_message("in flight")
		assert wait_for(lambda: first.Writing)
		os.kill(first.Process.pid, signal.SIGKILL)
		assert wait_for(lambda: first.Ended)  # the status thread put the envelope back in the feed
		assert wait_for(lambda: transport._child is not first)  # (a new one is started)
		killer = threading.Thread(target=transport.kill)
		killer.start()
		assert wait_for(lambda: transport._killed)
	killer.join(30)
	assert not killer.is_alive()
	assert counters["dropped_shutdown"] == 1
	said = [line for line in delivery_lines(caplog) if "not delivered" in line]
	assert len(said) == 1 and said[0].startswith("1 envelope(s) not delivered"), said


LAUNCHED = r"""
import json, sys, time
sys.path[:0] = json.loads(sys.argv[2])  # as PEX, Bazel or a zipapp's bootstrap: the dependencies added at run time
from asab_sentry.delivery import DeliveryOptions
from asab_sentry.delivery.process import ProcessDelivery
t = ProcessDelivery({"dsn": sys.argv[1]}, DeliveryOptions(shutdown_timeout=1.0))
deadline = time.monotonic() + 30
while not (t.Fallback is not None or t._child.Ready or time.monotonic() > deadline):
	time.sleep(0.02)
print(json.dumps({"ready": t.Fallback is None and t._child.Ready}), flush=True)
t.kill()
"""


def test_the_delivery_process_imports_from_the_services_own_path(server):
	"""A service whose launcher puts its dependencies on sys.path at run time (PEX, Bazel, a zipapp's bootstrap):
	the delivery process started with the interpreter's default path could not import them and fell back to threads.
	Here: the base interpreter of this virtualenv, the virtualenv's site-packages added at run time."""
	import json
	import sysconfig

	interpreter = getattr(sys, "_base_executable", sys.executable)
	paths = [os.path.join(REPO, "src"), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
	env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
	out = subprocess.run(
		[interpreter, "-c", LAUNCHED, server.dsn, json.dumps(paths)],
		capture_output=True,
		text=True,
		timeout=120,
		cwd=REPO,
		env=env,
	)
	assert out.returncode == 0, out.stderr
	assert json.loads(out.stdout.splitlines()[-1]) == {"ready": True}, out.stderr
	assert "ended unexpectedly" not in out.stderr


def test_is_healthy_until_the_feed_is_close_to_dropping(server):
	"""sentry-sdk's monitor samples transactions down while the transport is not healthy. In-process that is a queue
	over 90 % of its bound (close to dropping); the feed (bound: 4 x queue_max_size) said "not healthy" at 22 % of
	its bound, long before anything would be dropped."""
	bound = 60_000
	transport = start(server, queue_max_size=bound, request_timeout=30.0)
	assert wait_for(lambda: transport._child.Ready)
	child = transport._child
	os.kill(child.Process.pid, signal.SIGSTOP)  # the feed fills
	try:
		while transport._feed_bytes < 2 * bound:
			sentry_sdk.capture_message("m", extras={"pad": os.urandom(300).hex()})
		assert transport.is_healthy() and transport.Losses.Counters["dropped_queue_full"] == 0
		while not transport.Losses.Counters["dropped_queue_full"]:
			sentry_sdk.capture_message("m", extras={"pad": os.urandom(300).hex()})
		assert not transport.is_healthy()
	finally:
		os.kill(child.Process.pid, signal.SIGCONT)


def test_client_reports_in_the_pipe_are_not_counted_as_undelivered_envelopes(server, caplog):
	"""A client report (the service's own losses, queued at each flush) written to a delivery process that reads
	nothing was counted as an undelivered envelope: in pending(), the exit's line and dropped_shutdown."""
	transport = start(server, shutdown_timeout=1.0, request_timeout=30.0)
	assert wait_for(lambda: transport._child.Ready)
	child = transport._child
	os.kill(child.Process.pid, signal.SIGSTOP)
	try:
		for i in range(3):
			sentry_sdk.capture_message("stuck {}".format(i))
		transport.record_lost_event("sample_rate", data_category="error")  # goes with the next flush
		transport.flush(0.5)
		assert child.Written == 4  # the three envelopes and the client report
		assert transport.pending() == 3
		assert transport.shutdown() == 3
		transport.kill()
	finally:
		if child.Process.poll() is None:
			os.kill(child.Process.pid, signal.SIGCONT)
	assert transport.Losses.Counters["dropped_shutdown"] == 3
	said = [line for line in delivery_lines(caplog) if "not delivered" in line]
	assert len(said) == 1 and said[0].startswith("3 envelope(s) not delivered")


def test_an_envelope_with_thousands_of_items_is_handed_over(server, caplog):
	"""The client-report quantities of each item went into the frame's 2-byte meta length: an envelope with a few
	thousand items (attachments) made the feeder fail; the batch it had taken was lost without being counted."""
	from sentry_sdk.envelope import Envelope, Item, PayloadRef

	transport = start(server)
	envelope = Envelope(headers={"event_id": "a" * 32})
	envelope.add_event({"event_id": "a" * 32, "message": "many attachments", "level": "error"})
	for i in range(4000):
		envelope.add_item(
			Item(PayloadRef(bytes=b"x" * (i % 7 + 1)), type="attachment", headers={"filename": "f{}".format(i)})
		)
	transport.capture_envelope(envelope)
	sentry_sdk.capture_message("after it")
	transport.flush(30)
	assert sorted(messages(server)) == ["after it", "many attachments"]
	assert not [r for r in caplog.records if r.name.startswith("asab_sentry") and r.levelno >= logging.ERROR]
	assert transport.pending() == 0 and transport._feed_bytes == 0


def test_the_end_of_a_delivery_process_seen_while_a_frame_is_written_does_not_corrupt_the_next_ones_input(
	server, monkeypatch, tmp_path
):
	"""The delivery process ends while the feeder is blocked writing a batch (the pipe full), and the status thread
	sees the end first: it closed the pipe under the writing feeder, the next delivery process's pipe took the same
	descriptor number, and the rest of the batch (half a frame) went into it: that one read garbage and delivered
	nothing more. (A process it started keeps the pipe's reading end open, so that the feeder's write returns only
	after the end was handled, as when the status thread is the quicker one.)"""
	import threading

	holder = tmp_path / "holder.pid"
	real = process_module._child_command
	keep = (
		"import subprocess\n"
		"p = subprocess.Popen(['sleep', '60'], stdout=subprocess.DEVNULL)\n"
		"open({!r}, 'w').write(str(p.pid))\n".format(str(holder))
	)

	def command(root):
		argv = real(root)
		return [argv[0], "-c", keep + argv[2], *argv[3:]] if not holder.exists() else argv

	monkeypatch.setattr(process_module, "_child_command", command)
	monkeypatch.setattr(process_module, "FEED_GATHER", 1.0)  # the flush joins the batch of the envelopes before it
	transport = start(server, request_timeout=30.0)
	assert wait_for(lambda: transport._child.Ready and holder.exists())
	first = transport._child
	os.kill(first.Process.pid, signal.SIGSTOP)
	pad = os.urandom(5_000).hex()  # ~10 kB envelopes
	for i in range(50):  # ~0.5 MB written, not read
		sentry_sdk.capture_message("unread {}".format(i), extras={"pad": pad})
	assert wait_for(lambda: first.Written == 50)
	for i in range(60):  # ~0.6 MB and the flush: one batch, more than the pipe still takes
		sentry_sdk.capture_message("blocked {}".format(i), extras={"pad": pad})
	done = threading.Event()
	threading.Thread(target=lambda: (transport.flush(60), done.set()), daemon=True).start()
	assert wait_for(lambda: transport._commands and transport._commands[0].Child is first)
	os.kill(first.Process.pid, signal.SIGKILL)
	assert wait_for(lambda: first.Ended)
	os.kill(int(holder.read_text()), signal.SIGKILL)  # now the feeder's write fails
	assert done.wait(60)
	delivered = set(messages(server))
	assert {"unread {}".format(i) for i in range(50)} <= delivered
	assert {"blocked {}".format(i) for i in range(60)} <= delivered


def nice_of(pid: int, tid: int | None = None) -> int:
	path = "/proc/{}/task/{}/stat".format(pid, tid) if tid is not None else "/proc/{}/stat".format(pid)
	with open(path) as f:
		return int(f.read().rsplit(")", 1)[1].split()[16])  # field 19: nice


def test_the_delivery_process_runs_at_a_lower_cpu_priority_than_the_service(server):
	"""On a CPU both want, the service's event loop goes first: every thread of the delivery process is niced."""
	transport = start(server)
	assert wait_for(lambda: transport._child is not None and transport._child.Ready)
	sentry_sdk.capture_message("started its threads")
	transport.flush(30)
	pid = transport.Pid
	service = nice_of(os.getpid())
	niceness = {}
	for tid in os.listdir("/proc/{}/task".format(pid)):
		try:
			niceness[tid] = nice_of(pid, int(tid))
		except FileNotFoundError:
			pass  # a thread that ended since (the one that answered the flush)
	assert len(niceness) > 1  # its status thread and its transport's threads, started after the nice
	assert set(niceness.values()) == {min(19, service + process_module.NICENESS)}
