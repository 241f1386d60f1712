"""
``asab-sentry demo``: a collector in-process on a free loopback port, the documentation page's example
application run against it, and a report of what arrived. Exit code 0 only when everything expected did.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import pathlib
import shlex
import sys
import tempfile
import typing

import asab

from . import payload
from .cli import command
from .collector.app import CollectorApplication
from .collector.viewer import Printer, format_list, terminal_width

L = logging.getLogger(__name__)

IDENTITY = {"NODE_ID": "demo-node-1", "SERVICE_ID": "my-app", "INSTANCE_ID": "my-app-1", "SITE_ID": "demo-site"}
MANIFEST = {"version": "v1.2.3", "created_at": "2026-01-01T00:00:00Z"}
RELEASE = "MyApplication@v1.2.3"


def plural(count: int, noun: str) -> str:
	"""``1 event``, ``2 events``."""
	return "{} {}{}".format(count, noun, "" if count == 1 else "s")


def find_example() -> pathlib.Path:
	"""The example application: shipped in the wheel, or in the source checkout next to ``src/``."""
	here = pathlib.Path(__file__).resolve().parent
	for candidate in (here / "examples" / "my_app.py", here.parent.parent / "examples" / "my_app.py"):
		if candidate.is_file():
			return candidate
	raise FileNotFoundError("examples/my_app.py is not installed with this package")


@dataclasses.dataclass
class Check:
	name: str
	test: typing.Callable[[list[dict], list[dict]], bool]
	ok: bool = False


def _events(items: list[dict], store: typing.Any) -> tuple[list[dict], list[dict]]:
	full = [store.get(i["id"], sent=True) for i in items]  # what the application sent
	events = [f["payload"] for f in full if f and f["type"] == "event" and isinstance(f["payload"], dict)]
	txns = [f["payload"] for f in full if f and f["type"] == "transaction" and isinstance(f["payload"], dict)]
	return events, txns


def _exc(event: dict) -> tuple[str, str, dict]:
	chain = payload.exceptions(event) or [{}]
	mechanism = chain[-1].get("mechanism") or {}
	return chain[-1].get("type", ""), mechanism.get("type", ""), mechanism


def expected_checks() -> list[Check]:
	"""What the example application must have delivered."""

	def any_event(predicate: typing.Callable[[dict], bool]) -> typing.Callable[[list, list], bool]:
		return lambda events, txns: any(predicate(e) for e in events)

	return [
		Check(
			"capture_exception: ZeroDivisionError with its stack trace",
			any_event(lambda e: _exc(e)[0] == "ZeroDivisionError" and _exc(e)[2].get("handled") is True),
		),
		Check(
			"capture_message: 'required_variable was not set'",
			any_event(lambda e: payload.message(e) == "required_variable was not set"),
		),
		Check(
			"error log as event, with struct_data and breadcrumbs",
			any_event(
				lambda e: (
					payload.message(e) == "Cannot connect to the database"
					and (e.get("extra") or {}).get("host") == "db.example"
					and any(
						c.get("message") == "Demo is starting" for c in (e.get("breadcrumbs") or {}).get("values", [])
					)
				)
			),
		),
		Check(
			"uncaught exception in an asyncio task (KeyError), unhandled",
			any_event(
				lambda e: _exc(e)[0] == "KeyError" and _exc(e)[1] == "asyncio" and _exc(e)[2].get("handled") is False
			),
		),
		Check(
			"uncaught exception in a thread (RuntimeError)",
			any_event(lambda e: _exc(e)[0] == "RuntimeError" and _exc(e)[1] == "threading"),
		),
		Check(
			"error logged just before stop()", any_event(lambda e: payload.message(e) == "Last error before stopping")
		),
		Check(
			"transaction 'multiple tasks' with spans task1 and task2",
			lambda events, txns: any(
				t.get("transaction") == "multiple tasks"
				and {s.get("description") for s in t.get("spans", [])} >= {"task1", "task2"}
				for t in txns
			),
		),
		Check(
			"tags method, foo, fooz set; the invalid one rejected",
			lambda events, txns: (
				bool(events)
				and all(
					payload.tags(e).get("foo") == "bar" and "invalid key!" not in payload.tags(e)
					for e in events
					if payload.message(e) == "Cannot connect to the database"
				)
			),
		),
		Check(
			"identity: appclass, node_id, service_id, instance_id, site_id, release, environment",
			lambda events, txns: (
				bool(events)
				and all(
					payload.tags(e).get("appclass") == "MyApplication"
					and payload.tags(e).get("node_id") == IDENTITY["NODE_ID"]
					and payload.tags(e).get("service_id") == IDENTITY["SERVICE_ID"]
					and payload.tags(e).get("instance_id") == IDENTITY["INSTANCE_ID"]
					and payload.tags(e).get("site_id") == IDENTITY["SITE_ID"]
					and e.get("release") == RELEASE
					and e.get("environment") == "demo"
					for e in events + txns
				)
			),
		),
	]


class DemoApplication(CollectorApplication):
	"""The collector plus the demo scenario in ``main()``."""

	def __init__(self, storage: str, show_output: bool = False, timeout: float = 60.0):
		asab.Config.read_dict({"collector": {"listen": "127.0.0.1 0", "storage": storage}})
		super().__init__(args=[])
		logging.getLogger().setLevel(logging.WARNING)
		self.StoragePath = storage
		self.ShowOutput = show_output
		self.Timeout = timeout
		self.Checks = expected_checks()

	async def main(self) -> None:
		try:
			ok = await self._run()
		except Exception as e:
			print("Demo failed: {}".format(e))
			ok = False
		self.stop(0 if ok else 1)

	async def _run(self) -> bool:
		for _ in range(500):
			if self.Address is not None:
				break
			await asyncio.sleep(0.02)
		else:
			print("The collector did not start.")
			return False
		host, port = self.Address
		dsn = self.Collector.Settings.dsn(host, port)
		start_id = max([i["id"] for i in self.Store.list(limit=1)] or [0])
		print("Collector listening on http://{}:{}  (DSN {})".format(host, port, dsn))
		example = find_example()
		print("Running {} against it ...".format(example))

		with tempfile.TemporaryDirectory(prefix="asab-sentry-demo-") as workdir:
			manifest = pathlib.Path(workdir) / "MANIFEST.json"
			manifest.write_text(json.dumps(MANIFEST))
			config = pathlib.Path(workdir) / "my_app.conf"
			config.write_text(
				"[general]\nmanifest={}\n\n[sentry]\nenvironment=demo\ntraces_sample_rate=1.0\n\n"
				"[sentry:logging]\nbreadcrumbs=info\nevents=error\n".format(manifest)
			)
			env = dict(os.environ, SENTRY_DSN=dsn, **IDENTITY)
			env.pop("SENTRY_SPOTLIGHT", None)
			process = await asyncio.create_subprocess_exec(
				sys.executable,
				str(example),
				"-c",
				str(config),
				env=env,
				cwd=workdir,
				stdout=asyncio.subprocess.PIPE,
				stderr=asyncio.subprocess.STDOUT,
			)
			try:
				output, _ = await asyncio.wait_for(process.communicate(), timeout=self.Timeout)
			except asyncio.TimeoutError:
				process.kill()
				print("The example application did not finish within {}s.".format(self.Timeout))
				return False
		if self.ShowOutput or process.returncode != 0:
			print("---- example application output (exit code {}) ----".format(process.returncode))
			print(output.decode("utf-8", "replace").rstrip())
			print("----")

		# Everything is flushed when the example exits; allow a moment for the last requests.
		deadline = asyncio.get_running_loop().time() + 10.0
		while True:
			items = self.Store.list(after_id=start_id, limit=1000, newest_first=False)
			events, txns = _events(items, self.Store)
			for check in self.Checks:
				check.ok = check.test(events, txns)
			if all(c.ok for c in self.Checks) or asyncio.get_running_loop().time() > deadline:
				break
			await asyncio.sleep(0.1)

		counts: dict[str, int] = {}
		for item in items:
			counts[item["type"]] = counts.get(item["type"], 0) + 1
		print()
		print("Arrived: " + ", ".join(plural(n, t) for t, n in sorted(counts.items())))
		Printer(sys.stdout).print(format_list(items, terminal_width()))
		print()
		for check in self.Checks:
			print("  {} {}".format("[ok]  " if check.ok else "[MISSING]", check.name))
		passed = all(c.ok for c in self.Checks)
		print()
		if passed:
			print("Everything the documentation page promises arrived.")
		else:
			print("Something expected did not arrive.")
		storage_arg = (
			"" if self.StoragePath == "asab-sentry.sqlite" else " --storage {}".format(shlex.quote(self.StoragePath))
		)
		first_error = next((i["id"] for i in items if i["type"] == "event"), None)
		first_txn = next((i["id"] for i in items if i["type"] == "transaction"), None)
		exe = command()
		print("Explore it:")
		print("  {} events{} list".format(exe, storage_arg))
		if first_error is not None:
			print("  {} events{} show {}     # an error with its stack trace".format(exe, storage_arg, first_error))
		if first_txn is not None:
			print("  {} events{} show {}     # a transaction's span waterfall".format(exe, storage_arg, first_txn))
		return passed
