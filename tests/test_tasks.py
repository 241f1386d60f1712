"""Uncaught exceptions — main(), un-awaited asyncio tasks, loop callbacks, threads — exactly once, structured."""

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading

import asab
import pytest

import asab_sentry
from helpers import configure, payloads, run_app, until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail_in_task(record_id):
	raise ValueError("record {} is broken".format(record_id))


def assert_structured(event, exc_type, mechanism, handled=False):
	(exc,) = event["exception"]["values"]
	assert exc["type"] == exc_type
	assert exc["mechanism"]["type"] == mechanism and exc["mechanism"]["handled"] is handled
	assert exc["stacktrace"]["frames"], "stack frames are present"
	assert "logentry" not in event, "no traceback pasted into a log message"
	return exc


def test_unawaited_task_exception_once_and_structured(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		async def job():
			fail_in_task(7)

		asyncio.ensure_future(job())
		await asyncio.sleep(0.05)
		gc.collect()

	run_app(body)
	(event,) = payloads(collector)
	exc = assert_structured(event, "ValueError", "asyncio")
	assert exc["value"] == "record 7 is broken"
	assert exc["stacktrace"]["frames"][-1]["function"] == "fail_in_task"
	assert event["level"] == "error"


def test_same_bug_from_two_tasks_groups_together(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		async def job():
			fail_in_task(1)

		first, second = asyncio.ensure_future(job()), asyncio.ensure_future(job())
		await asyncio.sleep(0.05)
		del first, second
		gc.collect()

	run_app(body)
	events = payloads(collector, count=2)
	assert len(events) == 2
	shapes = []
	for event in events:
		exc = assert_structured(event, "ValueError", "asyncio")
		shapes.append(
			(exc["type"], exc["value"], [(f["function"], f.get("context_line")) for f in exc["stacktrace"]["frames"]])
		)
		assert "0x" not in json.dumps(exc["value"]) and "Task-" not in json.dumps(exc)
	assert shapes[0] == shapes[1]


def test_exception_caught_by_the_awaiting_code_is_not_reported(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		async def job():
			fail_in_task(3)

		try:
			await asyncio.ensure_future(job())
		except ValueError:
			pass
		gc.collect()

	run_app(body)
	assert payloads(collector, timeout=0.5) == []


def test_loop_callback_exception(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		asyncio.get_running_loop().call_soon(fail_in_task, 5)
		await asyncio.sleep(0.05)

	run_app(body)
	(event,) = payloads(collector)
	assert_structured(event, "ValueError", "asyncio")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_thread_exception_once(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		thread = threading.Thread(target=fail_in_task, args=(9,))
		thread.start()
		thread.join()

	run_app(body)
	(event,) = payloads(collector)
	assert_structured(event, "ValueError", "threading")


def test_tag_set_in_the_failing_task_is_on_its_event(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		async def job():
			app.SentryService.set_tag("job", "import")
			fail_in_task(2)

		asyncio.ensure_future(job())
		await asyncio.sleep(0.05)
		gc.collect()
		app.SentryService.capture_message("main has no job tag")

	run_app(body)
	events = payloads(collector, count=2)
	by_kind = {("exception" in e): e for e in events}
	assert by_kind[True]["tags"]["job"] == "import"
	assert "job" not in by_kind[False]["tags"]


def test_service_created_in_initialize_captures_task_errors(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	class Late(asab.Application):
		async def initialize(self):
			self.SentryService = asab_sentry.SentryService(self)

		async def main(self):
			async def job():
				fail_in_task(4)

			asyncio.ensure_future(job())
			await asyncio.sleep(0.05)
			gc.collect()
			self.stop()

	Late(args=[]).run()
	(event,) = payloads(collector)
	assert_structured(event, "ValueError", "asyncio")


def test_pending_task_destroyed_is_a_stable_message(sentry_capture):
	app = sentry_capture.application()
	loop = app.Loop

	async def forever():
		await asyncio.Event().wait()

	task = loop.create_task(forever())
	loop.run_until_complete(asyncio.sleep(0))
	del task
	gc.collect()
	event = sentry_capture.find(message="Task was destroyed but it is pending!")
	assert event["logentry"]["message"] == "Task was destroyed but it is pending!"
	assert "0x" not in event["logentry"]["message"]


def run_script(code, collector, timeout=60):
	env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
	env["SENTRY_DSN"] = collector.dsn
	return subprocess.run(
		[sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
	)


APP = """
import asyncio, logging, asab, asab_sentry
asab.Config.read_string("[sentry]\\n")
class MyApp(asab.Application):
    def __init__(self):
        super().__init__(args=[])
        self.SentryService = asab_sentry.SentryService(self)
    async def main(self):
{main}
MyApp().run()
"""


def test_exception_out_of_main_reaches_sentry_once(collector):
	out = run_script(APP.format(main="        raise RuntimeError('main failed')"), collector)
	assert out.returncode == 1
	assert "RuntimeError: main failed" in out.stderr
	(event,) = payloads(collector)
	assert_structured(event, "RuntimeError", "excepthook")


def test_error_logged_right_before_stop_arrives(collector):
	main = "        logging.getLogger('x').error('last words')\n        self.stop()"
	out = run_script(APP.format(main=main), collector)
	assert out.returncode == 0, out.stderr
	(event,) = payloads(collector)
	assert event["logentry"]["formatted"] == "last words"


def test_system_exit_in_main_is_not_an_error(collector):
	out = run_script(APP.format(main="        raise SystemExit(7)"), collector)
	assert out.returncode == 7
	assert payloads(collector, timeout=0.5) == []


async def _noop():
	return None


def test_loop_hooks_are_removed_again(sentry_capture):
	app = sentry_capture.application()
	from asab_sentry import tasks

	assert app.Loop.get_task_factory() is not None
	tasks.uninstall(app.Loop)
	assert app.Loop.get_task_factory() is None
	assert app.Loop.get_exception_handler().__name__ == "_loop_exception_handler"


def test_previous_task_factory_is_chained(sentry_capture):
	created = []
	import asab as asab_module

	loop = asyncio.new_event_loop()
	asyncio.set_event_loop(loop)

	def factory(loop, coro, **kwargs):
		created.append(coro)
		return asyncio.Task(coro, loop=loop, **kwargs)

	loop.set_task_factory(factory)
	app = asab_module.Application(args=[])
	asab_sentry.SentryService(app)
	loop.run_until_complete(loop.create_task(_noop()))
	assert len(created) == 1
	loop.run_until_complete(until(lambda: True))


def test_error_before_restart_arrives(collector, tmp_path):
	"""asab restarts with os.execv after finalize: atexit never runs, only the service's own flush sends it."""
	script = tmp_path / "restarting.py"
	script.write_text(
		APP.format(
			main=(
				"        import os\n"
				"        if os.environ.get('RESTARTED'):\n"
				"            self.stop()\n"
				"            return\n"
				"        os.environ['RESTARTED'] = '1'\n"
				"        logging.getLogger('x').error('before restart')\n"
				"        self.stop('!RESTART!')"
			)
		)
	)
	env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
	env["SENTRY_DSN"] = collector.dsn
	# asab re-executes `basename(sys.executable)`, which CPython resolves through PATH: like an activated venv,
	# the interpreter's directory must come first (README, "Restarts"), or the child runs another Python.
	env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
	out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
	assert out.returncode == 0, out.stderr
	assert "is restarting" in out.stderr
	(event,) = payloads(collector)
	assert event["logentry"]["formatted"] == "before restart"


# -- Failed tasks nobody awaits, reported while the service runs ----------------------------------------------


def exception_types(events):
	return sorted(e["exception"]["values"][-1]["type"] for e in events)


def test_held_and_cyclic_task_errors_are_reported_while_running(collector):
	"""Case 05: a task the service keeps a reference to, and one in a reference cycle, each reported once, soon."""
	configure({"sentry": {"data_source_name": collector.dsn}})
	seen = {}

	async def body(app):
		async def poll_upstream():
			raise ConnectionError("upstream refused the connection")

		async def cyclic_job():
			me = asyncio.current_task()  # noqa: F841  (traceback -> frame -> task -> exception)
			raise LookupError("record 7 vanished")

		gc.disable()  # the cycle is found only by the cyclic GC: it must not be needed
		try:
			app.Worker = asyncio.ensure_future(poll_upstream())
			asyncio.ensure_future(cyclic_job())
			# Reported while running, well before exit: the events arrive while the tasks are still alive.
			await asyncio.get_running_loop().run_in_executor(
				None, lambda: seen.update(events=payloads(collector, count=2))
			)
			seen["worker done"] = app.Worker.done()
		finally:
			gc.enable()

	run_app(body)
	assert seen["worker done"]
	assert exception_types(seen["events"]) == ["ConnectionError", "LookupError"]
	assert len(payloads(collector, count=3, timeout=1.0)) == 2, "once each, also not again at exit"
	for event in seen["events"]:
		assert_structured(event, event["exception"]["values"][-1]["type"], "asyncio")
		assert event["contexts"]["asyncio_task"]["coroutine"].endswith(("poll_upstream", "cyclic_job"))
		# CPython 3.13.0-3.13.2 rename every task a task factory made to "None" (python/cpython#130033).
		if not (3, 13, 0) <= sys.version_info[:3] <= (3, 13, 2):
			assert event["contexts"]["asyncio_task"]["name"].startswith("Task-")


def test_retrieved_exceptions_are_not_reported(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		async def job(n):
			fail_in_task(n)

		a, b, c = (asyncio.ensure_future(job(n)) for n in (1, 2, 3))
		await asyncio.sleep(0.01)
		try:
			a.result()
		except ValueError:
			pass
		assert isinstance(b.exception(), ValueError)
		await asyncio.gather(c, asyncio.ensure_future(job(4)), return_exceptions=True)
		await asyncio.sleep(1.0)  # twice the grace period

	run_app(body)
	assert payloads(collector, timeout=0.5) == []


def test_failure_just_before_exit_is_reported_at_exit(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		async def job():
			fail_in_task(8)

		app.Job = asyncio.ensure_future(job())
		await asyncio.sleep(0.01)

	run_app(body)
	(event,) = payloads(collector)
	assert_structured(event, "ValueError", "asyncio")


def test_asab_task_service_pubsub_and_timer_errors_once_with_task_context(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		async def scheduled():
			raise KeyError("scheduled job failed")

		async def subscriber(message_type):
			raise TimeoutError("subscriber failed")

		async def on_tick():
			raise OSError("timer handler failed")

		app.TaskService.schedule(scheduled())
		app.PubSub.subscribe("Test.message!", subscriber)
		app.PubSub.publish("Test.message!", asynchronously=True)
		asab.Timer(app, on_tick).start(0.01)
		await asyncio.get_running_loop().run_in_executor(None, lambda: payloads(collector, count=3))

	run_app(body)
	events = payloads(collector, count=4, timeout=1.0)
	assert exception_types(events) == ["KeyError", "OSError", "TimeoutError"]
	for event in events:
		assert "asyncio_task" in event["contexts"], event["exception"]["values"][-1]["type"]


def test_tasks_created_in_a_transaction_get_spans(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})

	async def body(app):
		async def load_rows():
			await asyncio.sleep(0.01)

		with app.SentryService.transaction("task", "import"):
			await asyncio.ensure_future(load_rows())

	run_app(body)
	(txn,) = payloads(collector, type="transaction")
	(span,) = txn["spans"]
	assert span["op"] == "function" and span["description"].endswith("load_rows")
	# sentry-sdk 2.27 (the oldest supported) sends a span's status as its tag "status"; newer ones as "status".
	assert span.get("status", span.get("tags", {}).get("status")) == "ok"


def test_task_spans_can_be_switched_off(collector):
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1", "task_spans": "false"}})

	async def body(app):
		async def load_rows():
			await asyncio.sleep(0)

		with app.SentryService.transaction("task", "import"):
			await asyncio.ensure_future(load_rows())

	run_app(body)
	(txn,) = payloads(collector, type="transaction")
	assert txn["spans"] == []


def test_no_task_span_for_the_loop_closing_an_abandoned_async_generator(collector):
	"""The loop closes an async generator left by ``break`` in a task of its own, whenever the GC finds it."""
	configure({"sentry": {"data_source_name": collector.dsn, "traces_sample_rate": "1"}})

	async def body(app):
		async def rows():
			for i in range(3):
				yield i

		async for _ in rows():
			break  # abandoned: closed by the loop's finalizer (aclose() as a task) once collected
		with app.SentryService.transaction("task", "later work"):
			gc.collect()
			for _ in range(10):
				await asyncio.sleep(0)
			await asyncio.ensure_future(asyncio.sleep(0))

	run_app(body)
	(txn,) = payloads(collector, type="transaction")
	assert [s["description"] for s in txn["spans"]] == ["sleep"]
