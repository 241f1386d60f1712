"""
How to test what your service reports to Sentry: the `sentry_capture` fixture comes with asab-sentry.
Run it with:  .venv/bin/python -m pytest examples/test_my_app.py
"""

import asyncio
import logging

import pytest
from my_app import MyApplication, call_collapsing_function

CONFIG = {"sentry": {"environment": "test", "traces_sample_rate": "1"}}


@pytest.mark.sentry_config(CONFIG)
def test_database_errors_are_reported_with_context(sentry_capture):
	MyApplication()  # no DSN needed: the fixture captures what would be sent
	logging.getLogger("my_app").error("Cannot connect to the database", struct_data={"host": "db1"})

	event = sentry_capture.find(level="error", message="Cannot connect to the database")
	assert event["extra"]["host"] == "db1"
	assert event["tags"]["appclass"] == "MyApplication"
	assert event["environment"] == "test"


@pytest.mark.sentry_config(CONFIG)
def test_tags_and_caught_exceptions(sentry_capture):
	app = MyApplication()
	app.SentryService.set_tags({"tenant": "acme", "bad key": "rejected"})
	try:
		call_collapsing_function()
	except ZeroDivisionError as e:
		app.SentryService.capture_exception(e)

	event = sentry_capture.find(exception_type="ZeroDivisionError", tag=("tenant", "acme"))
	assert "bad key" not in event["tags"]


@pytest.mark.sentry_config(CONFIG)
def test_transaction_with_spans(sentry_capture):
	app = MyApplication()
	with app.SentryService.transaction("task", "nightly import"):
		with app.SentryService.span("db", "load rows"):
			pass

	txn = sentry_capture.find(type="transaction", message="nightly import")
	assert [span["description"] for span in txn["spans"]] == ["load rows"]


@pytest.mark.asyncio
@pytest.mark.sentry_config(CONFIG)
async def test_uncaught_task_error(sentry_capture):
	MyApplication()  # created inside the running loop of pytest-asyncio

	async def job():
		raise KeyError("missing")

	asyncio.ensure_future(job())  # nobody awaits it: an uncaught error
	event = await sentry_capture.wait_for(exception_type="KeyError")
	assert event["exception"]["values"][0]["mechanism"] == {"type": "asyncio", "handled": False}
