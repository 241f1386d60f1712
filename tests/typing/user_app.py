"""
A user's module, type-checked (never run) by tests/test_typing.py with `mypy --strict`: every public name a
service and its tests use, each result shown by reveal_type (which mypy provides: hence noqa F821).
"""

# ruff: noqa: F821

import asab
import pytest

import asab_sentry
from asab_sentry.testing import SentryCapture


class MyApplication(asab.Application):
	def __init__(self) -> None:
		super().__init__()
		self.SentryService = asab_sentry.SentryService(self)


def work(app: MyApplication) -> None:
	svc = app.SentryService
	reveal_type(svc)
	reveal_type(svc.capture_message("quota exceeded", level="warning", tags={"tenant": "acme"}))
	reveal_type(svc.capture_exception(ValueError("x")))
	svc.set_tag("attempt", 1)
	svc.set_tags({"foo": "bar", "fooz": True})
	svc.set_context("import", {"rows": 1200})
	reveal_type(svc.Settings)
	reveal_type(svc.Settings.traces_sample_rate)
	with svc.transaction("task", "nightly import") as transaction:
		reveal_type(transaction)
		with svc.span("db", "load rows") as span:
			reveal_type(span)

	@svc.transaction("task", "decorated")
	def decorated(x: int) -> int:
		return x

	reveal_type(decorated)

	@svc.span("task", "decorated coroutine")
	async def decorated_coroutine(x: int) -> str:
		return str(x)

	reveal_type(decorated_coroutine)
	reveal_type(asab_sentry.Measure("span", "db", "query"))


async def async_work(app: MyApplication) -> None:
	async with app.SentryService.transaction("task", "async") as transaction:
		reveal_type(transaction)


@pytest.mark.sentry_config({"sentry": {"environment": "test"}})
def test_reported(sentry_capture: SentryCapture) -> None:
	sentry_capture.configure({"sentry": {"environment": "test"}})
	app = MyApplication()
	work(app)
	reveal_type(sentry_capture.find(level="error", message="x"))
	reveal_type(sentry_capture.find_all(type="transaction"))
	reveal_type(sentry_capture.events)
	reveal_type(sentry_capture.transactions)
	reveal_type(sentry_capture.wait(exception_type="KeyError"))
	reveal_type(sentry_capture.wait(lambda capture: len(capture.events)))
	reveal_type(sentry_capture.application())
	reveal_type(sentry_capture.application(MyApplication))
	with asab_sentry.testing.capture_sentry({"sentry": {}}) as capture:
		reveal_type(capture)


async def test_async(sentry_capture: SentryCapture) -> None:
	reveal_type(await sentry_capture.wait_for(level="error"))
	reveal_type(await sentry_capture.wait_for(lambda capture: capture.events[-1]))
