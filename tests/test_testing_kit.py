"""asab_sentry.testing: the capture fixture and context manager our users test their services with."""

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import unittest

import asab
import pytest
import sentry_sdk

import asab_sentry
from asab_sentry.testing import capture_sentry

L = logging.getLogger("tests.kit")


class MyApplication(asab.Application):
	def __init__(self):
		super().__init__(args=[])
		self.SentryService = asab_sentry.SentryService(self)


def test_users_own_application_needs_no_dsn(sentry_capture):
	app = MyApplication()
	L.error("reported")
	event = sentry_capture.find(level="error", message="reported", logger="tests.kit")
	assert event["tags"]["appclass"] == "MyApplication"
	assert app.SentryService.Settings.dsn is None


def test_events_transactions_envelopes_and_clear(sentry_capture):
	sentry_capture.configure({"sentry": {"traces_sample_rate": "1"}})
	app = MyApplication()
	app.SentryService.capture_message("m")
	with app.SentryService.transaction("task", "t"):
		pass
	assert len(sentry_capture.events) == 1 and len(sentry_capture.transactions) == 1
	assert {i.type for e in sentry_capture.envelopes for i in e.items} >= {"event", "transaction"}
	sentry_capture.clear()
	assert sentry_capture.events == [] and sentry_capture.transactions == [] and sentry_capture.envelopes == []


def test_find_by_every_criterion(sentry_capture):
	app = MyApplication()
	app.SentryService.set_tag("tenant", "acme")
	try:
		raise TimeoutError("slow")
	except TimeoutError as e:
		app.SentryService.capture_exception(e)
	L.warning("not an event")
	L.error("an error")
	assert sentry_capture.find(exception_type="TimeoutError")["level"] == "error"
	assert sentry_capture.find(tag=("tenant", "acme"), message="an error")["logger"] == "tests.kit"
	assert sentry_capture.find(tags={"tenant": "acme", "appclass": "MyApplication"}, logger="tests.kit")
	assert sentry_capture.find_all(level="warning") == []
	assert len(sentry_capture.find_all(tag=("tenant", "acme"))) == 2


def test_find_failure_lists_what_was_captured(sentry_capture):
	app = MyApplication()
	app.SentryService.capture_message("something else", level="warning")
	with pytest.raises(AssertionError) as info:
		sentry_capture.find(message="expected text", level="error")
	message = str(info.value)
	assert "No captured event matches message='expected text', level='error'." in message
	assert "event level=warning title='something else'" in message
	assert "'appclass': 'MyApplication'" in message


def test_find_failure_when_nothing_was_captured(sentry_capture):
	MyApplication()
	with pytest.raises(AssertionError, match="Nothing was captured"):
		sentry_capture.find(exception_type="KeyError")


def test_wait_for_in_async_code(sentry_capture):
	app = MyApplication()

	async def scenario():
		async def later():
			await asyncio.sleep(0.05)
			L.error("eventually")

		app.Loop.create_task(later())
		return await sentry_capture.wait_for(message="eventually", timeout=2)

	event = app.Loop.run_until_complete(scenario())
	assert event["logentry"]["formatted"] == "eventually"

	async def never():
		await sentry_capture.wait_for(lambda c: len(c.events) > 5, timeout=0.1)

	with pytest.raises(AssertionError, match="Timed out after 0.1s"):
		app.Loop.run_until_complete(never())


def test_wait_blocking_variant(sentry_capture):
	import threading

	app = MyApplication()
	threading.Timer(0.05, lambda: app.SentryService.capture_message("from timer")).start()
	assert sentry_capture.wait(message="from timer", timeout=2)


@pytest.mark.sentry_config({"sentry": {"environment": "from-marker"}})
def test_config_from_marker(sentry_capture):
	app = MyApplication()
	app.SentryService.capture_message("m")
	assert sentry_capture.find()["environment"] == "from-marker"


def test_invalid_config_still_fails(sentry_capture):
	sentry_capture.configure("[sentry]\ntraces_sample_rate=7\n")
	with pytest.raises(asab_sentry.SentryConfigError):
		MyApplication()


def test_context_manager_without_pytest_restores_everything():
	os.environ["SENTRY_DSN"] = "https://k@127.0.0.1:9/1"
	os.environ["NODE_ID"] = "outer"
	sections_before = asab.Config.sections()
	handlers_before = list(logging.getLogger().handlers)
	with capture_sentry({"sentry": {"environment": "inner"}, "custom": {"x": "1"}}) as capture:
		assert "SENTRY_DSN" not in os.environ and "NODE_ID" not in os.environ
		app = MyApplication()
		app.SentryService.capture_message("inside")
		assert capture.find(message="inside")["environment"] == "inner"
		assert sentry_sdk.get_client().is_active()
	assert not sentry_sdk.get_client().is_active()
	assert os.environ["SENTRY_DSN"] == "https://k@127.0.0.1:9/1" and os.environ["NODE_ID"] == "outer"
	assert asab.Config.sections() == sections_before
	assert logging.getLogger().handlers == handlers_before
	assert asab.abc.singleton.Singleton._instances.get(MyApplication) is None
	assert sentry_sdk.get_global_scope()._tags == {}


def test_two_captures_in_a_row_do_not_leak():
	with capture_sentry({"sentry": {"environment": "first"}}) as first:
		app = MyApplication()
		app.SentryService.set_tag("only_first", "yes")
		sentry_sdk.get_global_scope().set_tag("global_first", "yes")
		app.SentryService.capture_message("one")
	with capture_sentry() as second:
		app = MyApplication()
		app.SentryService.capture_message("two")
	assert len(first.events) == 1 and len(second.events) == 1
	event = second.find(message="two")
	assert event["environment"] == "production"
	assert "only_first" not in event["tags"] and "global_first" not in event["tags"]
	assert first.find(message="one")["tags"]["only_first"] == "yes"


class UnittestStyle(unittest.TestCase):
	"""asab's own style: unittest, an Application per test."""

	def setUp(self):
		self.capture_context = capture_sentry({"sentry:logging": {"events": "warning"}})
		self.capture = self.capture_context.__enter__()
		self.app = MyApplication()

	def tearDown(self):
		self.capture_context.__exit__(None, None, None)

	def test_warning_event(self):
		L.warning("unittest warning")
		self.assertEqual(self.capture.find(message="unittest warning")["level"], "warning")


def test_plugin_is_registered_by_entry_point(tmp_path):
	"""A user's project gets the fixture just by installing the package."""
	(tmp_path / "test_user.py").write_text(
		textwrap.dedent(
			"""
			import asab, asab_sentry

			class UserApp(asab.Application):
				def __init__(self):
					super().__init__(args=[])
					self.S = asab_sentry.SentryService(self)

			def test_it(sentry_capture):
				UserApp().S.capture_message("user test")
				assert sentry_capture.find(message="user test")["tags"]["appclass"] == "UserApp"

			def test_it_again(sentry_capture):
				UserApp().S.capture_message("second")
				assert len(sentry_capture.events) == 1
			"""
		)
	)
	env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
	out = subprocess.run(
		[sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_user.py")],
		capture_output=True,
		text=True,
		cwd=tmp_path,
		env=env,
		timeout=120,
	)
	assert "2 passed" in out.stdout, out.stdout + out.stderr


def test_internal_sdk_error_fails_the_users_test(tmp_path):
	(tmp_path / "test_user.py").write_text(
		textwrap.dedent(
			"""
			import asab, asab_sentry, sentry_sdk

			def test_swallowed(sentry_capture):
				app = asab.Application(args=[])
				asab_sentry.SentryService(app)
				def broken(event, hint):
					raise RuntimeError("bug in before_send")
				sentry_sdk.get_client().options["before_send"] = broken
				app.get_service("asab.SentryService").capture_message("x")
			"""
		)
	)
	out = subprocess.run(
		[sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_user.py")],
		capture_output=True,
		text=True,
		cwd=tmp_path,
		timeout=120,
	)
	assert "sentry-sdk swallowed internal errors" in out.stdout, out.stdout
	summary = out.stdout.strip().splitlines()[-1]
	assert "1 passed" in summary and "1 error" in summary, summary


def test_docs_show_the_tested_example_verbatim():
	root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
	with open(os.path.join(root, "examples", "test_my_app.py")) as f:
		example = f.read()
	with open(os.path.join(root, "docs", "testing.md")) as f:
		docs = f.read()
	assert "```python\n" + example + "```" in docs
