"""Faithful capture: exception groups behind __context__/__cause__ (04), stack_info and L.exception() outside
an except block (11), cancelled transactions and spans."""

import asyncio
import gc
import logging
import sys

import pytest

from helpers import configure, payloads, run_app

L = logging.getLogger("tests.faithful")

needs_groups = pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup and TaskGroup: Python 3.11+")


async def child(name):
	await asyncio.sleep(0.001)
	raise ValueError("child {} failed".format(name))


async def run_group(tag):
	try:
		async with asyncio.TaskGroup() as group:
			group.create_task(child(tag + "-1"))
			group.create_task(child(tag + "-2"))
	finally:
		raise TypeError("cleanup after {} failed".format(tag))


def chain(event):
	return [(x["type"], x.get("value")) for x in event["exception"]["values"]]


def assert_whole_group(event, tag):
	values = chain(event)
	assert values[-1] == ("TypeError", "cleanup after {} failed".format(tag))
	assert ("ExceptionGroup", "unhandled errors in a TaskGroup") in values
	assert ("ValueError", "child {}-1 failed".format(tag)) in values
	assert ("ValueError", "child {}-2 failed".format(tag)) in values


@needs_groups
def test_group_behind_context_keeps_children_captured_logged_and_uncaught(collector):
	configure({"sentry": {"data_source_name": collector.dsn}})

	async def body(app):
		try:
			await run_group("captured")
		except Exception as e:
			app.SentryService.capture_exception(e)
		try:
			await run_group("logged")
		except Exception:
			L.exception("Group run failed")
		task = asyncio.ensure_future(run_group("uncaught"))
		await asyncio.wait([task])
		del task
		gc.collect()  # the task's traceback refers to the task (TaskGroup): reported when the cycle is collected
		await asyncio.sleep(0)

	run_app(body)
	events = payloads(collector, count=3)
	for tag in ("captured", "logged", "uncaught"):
		(event,) = [e for e in events if any(tag in (x.get("value") or "") for x in e["exception"]["values"])]
		assert_whole_group(event, tag)


@needs_groups
def test_group_behind_cause(sentry_capture):
	svc = sentry_capture.application().get_service("asab.SentryService")
	try:
		try:
			raise ExceptionGroup("batch", [KeyError("a"), OSError("b")])  # noqa: F821 (3.11+)
		except ExceptionGroup as group:  # noqa: F821
			raise RuntimeError("batch failed") from group
	except RuntimeError as e:
		svc.capture_exception(e)
	values = chain(sentry_capture.find(exception_type="RuntimeError"))
	assert [t for t, _ in values] == ["OSError", "KeyError", "ExceptionGroup", "RuntimeError"]


def check_stock(sku):
	L.error("Stock level negative for %s", sku, stack_info=True)


def nightly_audit():
	check_stock("X-100")


def compare_totals():
	L.exception("Totals differ")


def functions(event):
	frames = event["threads"]["values"][0]["stacktrace"]["frames"]
	return [f["function"] for f in frames]


def test_stack_info_carries_the_calling_stack(sentry_capture):
	sentry_capture.application()
	nightly_audit()
	event = sentry_capture.find(message="Stock level negative for X-100")
	assert functions(event)[-2:] == ["nightly_audit", "check_stock"], "innermost frame is the logging call"


def test_exception_outside_except_carries_the_stack(sentry_capture):
	sentry_capture.application()
	compare_totals()
	event = sentry_capture.find(message="Totals differ")
	assert functions(event)[-1] == "compare_totals" and "exception" not in event


def test_plain_error_log_has_no_stack(sentry_capture):
	sentry_capture.application()
	L.error("no stack asked for")
	assert "threads" not in sentry_capture.find(message="no stack asked for")


@pytest.fixture
def svc(sentry_capture):
	sentry_capture.configure({"sentry": {"traces_sample_rate": "1"}})
	return sentry_capture.application().get_service("asab.SentryService")


def test_cancelled_transaction_and_span(svc, sentry_capture):
	async def work():
		async with svc.transaction("task", "cancelled work"):
			async with svc.span("io", "wait"):
				await asyncio.sleep(10)

	async def main():
		task = asyncio.ensure_future(work())
		await asyncio.sleep(0.05)
		task.cancel()
		with pytest.raises(asyncio.CancelledError):
			await task

	asyncio.run(main())
	txn = sentry_capture.find(type="transaction")
	assert txn["contexts"]["trace"]["status"] == "cancelled"
	# (sentry-sdk before 2.3x puts a span's status in its tags)
	assert [s.get("status") or s.get("tags", {}).get("status") for s in txn["spans"]] == ["cancelled"]


def test_failed_transaction_is_still_internal_error(svc, sentry_capture):
	with pytest.raises(ZeroDivisionError):
		with svc.transaction("task", "failing"):
			1 / 0  # noqa: B018
	assert sentry_capture.find(type="transaction")["contexts"]["trace"]["status"] == "internal_error"
