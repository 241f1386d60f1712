"""Small helpers for tests that run a real asab Application."""

from __future__ import annotations

import asyncio
import time
import typing

import asab
import sentry_sdk

import asab_sentry
from asab_sentry import payload


def configure(config: dict[str, dict[str, typing.Any]] | str) -> None:
	if isinstance(config, str):
		asab.Config.read_string(config)
	else:
		asab.Config.read_dict({s: {k: str(v) for k, v in o.items()} for s, o in config.items()})


class App(asab.Application):
	"""An application that creates its SentryService in __init__ and runs ``Body`` as main()."""

	Body: typing.Callable[[App], typing.Awaitable[None]] | None = None

	def __init__(self):
		super().__init__(args=[])
		self.SentryService = asab_sentry.SentryService(self)

	async def main(self):
		try:
			if self.Body is not None:
				await self.Body(self)
		finally:
			self.stop()


def run_app(
	body: typing.Callable[[asab.Application], typing.Awaitable[None]], app_class: type = App
) -> asab.Application:
	"""Create the app, run ``body`` as its main() and let it exit normally."""

	class Running(app_class):  # type: ignore[misc, valid-type]
		pass

	Running.__name__ = app_class.__name__
	Running.Body = staticmethod(body)  # type: ignore[assignment]
	app = Running()
	app.run()
	return app


def items(collector, type: str | None = None, timeout: float = 5.0, count: int = 1) -> list[dict]:
	"""
	Full stored items of the collector, waiting until at least ``count`` are there; ``payload`` is the JSON
	as the SDK sent it (not the collector's normalized form).
	"""
	sentry_sdk.flush(timeout=timeout)
	deadline = time.monotonic() + timeout
	while True:
		rows = collector.Collector.Store.list(type=type, limit=1000, newest_first=False)
		if len(rows) >= count or time.monotonic() > deadline:
			return [collector.Collector.Store.get(r["id"], sent=True) for r in rows]
		time.sleep(0.02)


def payloads(collector, type: str = "event", **kwargs: typing.Any) -> list[dict]:
	return [i["payload"] for i in items(collector, type=type, **kwargs)]


async def until(predicate: typing.Callable[[], bool], timeout: float = 5.0) -> None:
	deadline = time.monotonic() + timeout
	while not predicate():
		if time.monotonic() > deadline:
			raise AssertionError("condition not met within {}s".format(timeout))
		await asyncio.sleep(0.01)


# The message of an event, from capture_message (``message``) or logging (``logentry``).
text = payload.message
