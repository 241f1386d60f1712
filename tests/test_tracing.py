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


def test_decorated_generator_is_measured_while_it_runs(svc, sentry_capture):
	"""The transaction covers the iteration (spans of each item inside it), not only creating the generator."""
	moments = []

	@svc.transaction("task", "sync rows")
	def rows(n):
		for i in range(n):
			with svc.span("db", "row {}".format(i)):
				moments.append(time.time())
				time.sleep(0.01)
			received = yield i
			if received is not None:
				yield "got {}".format(received)

	generator = rows(3)
	assert sentry_capture.transactions == []  # created, not started
	assert next(generator) == 0
	assert generator.send("x") == "got x"  # send() reaches the generator
	assert list(generator) == [1, 2]
	txn = sentry_capture.find(type="transaction", message="sync rows")
	assert spans(txn) == [("db", "row 0"), ("db", "row 1"), ("db", "row 2")]
	assert encloses(txn, *moments)
	early = rows(3)
	next(early)
	early.close()  # a consumer that stops early: a normal end, not an error
	assert len(sentry_capture.transactions) == 2
	assert sentry_capture.transactions[-1]["contexts"]["trace"].get("status") in (None, "ok")


def test_decorated_async_generator_is_measured_while_it_runs(svc, sentry_capture):
	moments = []

	@svc.transaction("task", "async rows")
	async def rows(n):
		for i in range(n):
			async with svc.span("db", "row {}".format(i)):
				moments.append(time.time())
				await asyncio.sleep(0.01)
			received = yield i
			if received is not None:
				yield "got {}".format(received)

	async def consume():
		generator = rows(3)
		first = await generator.__anext__()
		answer = await generator.asend("x")  # asend() reaches the generator
		rest = [i async for i in generator]
		return first, answer, rest

	assert asyncio.run(consume()) == (0, "got x", [1, 2])
	txn = sentry_capture.find(type="transaction", message="async rows")
	assert spans(txn) == [("db", "row 0"), ("db", "row 1"), ("db", "row 2")]
	assert encloses(txn, *moments)
	assert txn["contexts"]["trace"].get("status") in (None, "ok")


def test_decorated_async_generator_closed_early_or_failing(svc, sentry_capture):
	closed = []

	@svc.transaction("task", "endless")
	async def endless():
		try:
			i = 0
			while True:
				yield i
				i += 1
		finally:
			closed.append(True)

	@svc.transaction("task", "failing rows")
	async def failing():
		yield 1
		raise KeyError("row")

	@svc.transaction("task", "throw into")
	async def catching():
		try:
			yield 1
		except ValueError:
			yield "handled"

	async def consume():
		generator = endless()
		async for i in generator:
			if i == 2:
				break
		await generator.aclose()
		with pytest.raises(KeyError):
			async for _ in failing():
				pass
		thrown = catching()
		await thrown.__anext__()
		assert await thrown.athrow(ValueError("v")) == "handled"  # athrow() reaches the generator
		await thrown.aclose()

	asyncio.run(consume())
	assert closed == [True]
	assert sentry_capture.find(type="transaction", message="endless")["contexts"]["trace"].get("status") in (None, "ok")
	assert sentry_capture.find(type="transaction", message="failing rows")["contexts"]["trace"]["status"] == (
		"internal_error"
	)
	assert len(sentry_capture.transactions) == 3


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


def test_generator_closed_after_its_transaction_does_not_revive_it(svc, sentry_capture):
	"""sentry-sdk's exit restores the span current at the start: here the finished transaction 'first'."""
	import sentry_sdk

	@svc.span("db", "rows")
	def rows():
		yield 1
		yield 2

	with svc.transaction("task", "first"):
		kept = rows()
		next(kept)
	kept.close()  # after 'first' ended
	assert sentry_sdk.get_current_span() is None
	with svc.transaction("task", "second"):
		with svc.span("db", "in second"):
			pass
	second = named(sentry_capture, "second")
	assert spans(second) == [("db", "in second")]
	assert sentry_sdk.get_current_span() is None


def named(sentry_capture, name):
	return sentry_capture.find(type="transaction", message=name)


def test_async_generator_left_by_break_does_not_steal_the_next_transactions_spans(svc, sentry_capture):
	"""
	``break`` out of ``async for`` leaves the generator to the event loop, which closes it later in another task;
	that close made the finished transaction current again in the consumer, in the middle of its next one.
	"""
	import gc

	import sentry_sdk

	@svc.span("db", "rows")
	async def rows():
		for i in range(5):
			await asyncio.sleep(0)
			yield i

	async def worker():
		sizes = []
		for n in range(20):
			async with svc.transaction("task", "loop {}".format(n)):
				async for i in rows():
					if i == 1:
						break
			async with svc.transaction("task", "next {}".format(n)):
				gc.collect()  # the abandoned generator is closed by the loop's finalizer task
				for _ in range(100):
					await asyncio.sleep(0)
				current = sentry_sdk.get_current_span()
				assert current is not None and current.name == "next {}".format(n)
				async with svc.span("db", "in next"):
					pass
			sizes.append(len(_open_stack()))
		return sizes

	sizes = asyncio.run(worker())
	# Without pruning, blocks closed elsewhere pile up in the consumer's stack: 1, 2, ..., 20.
	assert max(sizes) < 10, sizes
	for n in range(20):
		assert ("db", "in next") in spans(named(sentry_capture, "next {}".format(n)))


def _open_stack():
	from asab_sentry import tracing

	return tracing._open.get()


def test_consumer_of_a_decorated_generator_keeps_its_own_current_span(svc, sentry_capture):
	"""
	Between its items, the generator's span (or transaction) is not the consumer's: the consumer's spans go
	where they are written, the generator's own spans (also inside a ``with`` block across a yield) under it.
	"""

	@svc.span("db", "rows")
	def rows():
		with svc.span("db", "cursor"):
			yield 1
			with svc.span("db", "fetch"):
				pass
			yield 2

	@svc.transaction("task", "producer")
	async def produce():
		for i in range(2):
			async with svc.span("io", "produce {}".format(i)):
				await asyncio.sleep(0)
			yield i

	async def consume():
		async with svc.transaction("task", "consumer"):
			async for i in produce():
				async with svc.span("io", "consume {}".format(i)):
					await asyncio.sleep(0)
			for i in rows():
				with svc.span("cpu", "use {}".format(i)):
					pass

	asyncio.run(consume())
	consumer = named(sentry_capture, "consumer")
	producer = named(sentry_capture, "producer")
	assert sorted(spans(producer)) == [("io", "produce 0"), ("io", "produce 1")]
	parents = {s["description"]: s["parent_span_id"] for s in consumer["spans"]}
	ids = {s["description"]: s["span_id"] for s in consumer["spans"]}
	root = consumer["contexts"]["trace"]["span_id"]
	assert parents["consume 0"] == parents["consume 1"] == root
	assert parents["use 1"] == parents["use 2"] == parents["rows"] == root
	assert parents["cursor"] == ids["rows"] and parents["fetch"] == ids["cursor"]
