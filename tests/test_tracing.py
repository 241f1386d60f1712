"""transaction() and span(): with, async with, decorators; errors; no-op outside a transaction."""

import asyncio
import contextvars
import datetime
import time
import warnings

import pytest

CONFIG = {"sentry": {"traces_sample_rate": "1.0"}}


def seconds(value):
	if isinstance(value, str):
		return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
	return value


def encloses(item, *moments):
	"""The item's start and end enclose the given moments (the block really ran inside it)."""
	return all(seconds(item["start_timestamp"]) <= moment <= seconds(item["timestamp"]) for moment in moments)


@pytest.fixture
def svc(sentry_capture):
	sentry_capture.configure(CONFIG)
	return sentry_capture.application().get_service("asab.SentryService")


def spans(txn):
	return [(s["op"], s["description"]) for s in txn["spans"]]


def test_with_blocks_as_on_the_docs_page(svc, sentry_capture):
	with svc.transaction("speed test", "multiple tasks"):
		with svc.span("task", "task1"):
			pass
		with svc.span("task", "task2"):
			with svc.span("db", "nested"):
				pass
	txn = sentry_capture.find(type="transaction")
	assert txn["transaction"] == "multiple tasks"
	assert txn["contexts"]["trace"]["op"] == "speed test"
	assert spans(txn) == [("task", "task1"), ("task", "task2"), ("db", "nested")]
	by_description = {s["description"]: s for s in txn["spans"]}
	assert by_description["nested"]["parent_span_id"] == by_description["task2"]["span_id"]


def test_async_with(svc, sentry_capture):
	async def work():
		async with svc.transaction("task", "async block"):
			async with svc.span("io", "sleep"):
				moments.append(time.time())
				await asyncio.sleep(0.01)
				moments.append(time.time())

	moments = []

	asyncio.run(work())
	txn = sentry_capture.find(type="transaction")
	assert spans(txn) == [("io", "sleep")]
	(span,) = txn["spans"]
	assert encloses(span, *moments)


def test_decorators_sync_and_async(svc, sentry_capture):
	@svc.span("db", "load")
	def load(x):
		return x * 2

	@svc.transaction("task", "sync job")
	def job():
		return load(21)

	@svc.span("db", "aload")
	async def aload():
		return "a"

	@svc.transaction("task", "async job")
	async def ajob():
		return await aload()

	assert job() == 42
	assert job.__name__ == "job"
	assert asyncio.run(ajob()) == "a"
	sync_txn = sentry_capture.find(type="transaction", message="sync job")
	async_txn = sentry_capture.find(type="transaction", message="async job")
	assert spans(sync_txn) == [("db", "load")]
	assert spans(async_txn) == [("db", "aload")]


def test_one_measure_object_reused_concurrently(svc, sentry_capture):
	step = svc.span("step", "shared")

	async def worker(name):
		async with svc.transaction("task", name):
			async with step:
				await asyncio.sleep(0.01)

	async def main():
		await asyncio.gather(worker("w1"), worker("w2"))

	asyncio.run(main())
	for name in ("w1", "w2"):
		assert spans(sentry_capture.find(type="transaction", message=name)) == [("step", "shared")]


def test_exception_marks_error_and_propagates(svc, sentry_capture):
	class Boom(Exception):
		pass

	with pytest.raises(Boom) as info:
		with svc.transaction("task", "failing"):
			with svc.span("db", "query"):
				raise Boom("as is")
	assert str(info.value) == "as is"
	txn = sentry_capture.find(type="transaction")
	assert txn["contexts"]["trace"]["status"] == "internal_error"
	span = txn["spans"][0]
	assert (span.get("status") or span["tags"]["status"]) == "internal_error"  # older sentry-sdk: a tag


def test_exception_in_decorated_coroutine_propagates(svc, sentry_capture):
	@svc.transaction("task", "async failing")
	async def fails():
		raise KeyError("k")

	with pytest.raises(KeyError):
		asyncio.run(fails())
	assert sentry_capture.find(type="transaction")["contexts"]["trace"]["status"] == "internal_error"


def test_span_outside_transaction_is_a_harmless_noop(svc, sentry_capture):
	with svc.span("db", "orphan") as span:
		value = 1
	assert span is None and value == 1

	@svc.span("db", "orphan fn")
	def f():
		return "ok"

	assert f() == "ok"
	assert sentry_capture.transactions == []
	assert [e for e in sentry_capture.envelopes if any(i.type == "span" for i in e.items)] == []


def test_no_deprecation_warnings(svc):
	with warnings.catch_warnings():
		warnings.simplefilter("error")
		with svc.transaction("task", "warn check"):
			with svc.span("db", "q"):
				pass


def test_sample_rate_zero_sends_no_transaction(sentry_capture):
	svc = sentry_capture.application().get_service("asab.SentryService")
	with svc.transaction("task", "unsampled"):
		with svc.span("db", "q"):
			pass
	assert sentry_capture.transactions == []


def test_transaction_measures_the_block(svc, sentry_capture):
	with svc.transaction("speed test", "test sleeping"):
		entered = time.time()
		time.sleep(0.05)
		leaving = time.time()
	txn = sentry_capture.find(type="transaction")
	assert encloses(txn, entered, leaving)


def test_many_measures_in_one_task_do_not_grow_its_context(svc, sentry_capture):
	"""A long-lived task creating transactions and spans in a loop keeps a context of constant size."""

	async def worker():
		sizes = []
		for n in range(2000):
			with svc.transaction("task", "loop"):
				with svc.span("db", "q"):
					pass
			if n in (10, 1999):
				sizes.append(len(contextvars.copy_context()))
		return sizes

	first, last = asyncio.run(worker())
	assert last == first


def test_interleaved_blocks_of_two_measures_close_their_own_spans(svc, sentry_capture):
	outer = svc.transaction("task", "outer")
	inner = svc.span("db", "inner")
	with outer:
		entered = inner.__enter__()
		with svc.span("db", "other"):
			pass
		inner.__exit__(None, None, None)
	assert entered is not None and entered.timestamp is not None
	txn = sentry_capture.find(type="transaction")
	assert sorted(spans(txn)) == [("db", "inner"), ("db", "other")]
