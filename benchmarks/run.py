#!/usr/bin/env python3
"""
Benchmarks: measured, never asserted. One command, one table:

	.venv/bin/python benchmarks/run.py              # the table (about 15 minutes on 2 cores)
	.venv/bin/python benchmarks/run.py --rounds 3   # the same with fewer rounds
	.venv/bin/python benchmarks/run.py --quick      # a smoke run: 1 round, few iterations, the numbers mean nothing
	.venv/bin/python benchmarks/run.py collector    # envelopes per second into the local collector (collector.py)

Three set-ups of the same work, each in its own fresh process (so nothing one of them patches leaks into
another): ``plain`` logging in an asab application that never imports sentry-sdk; ``sdk``, sentry-sdk set up by asab's
built-in ``asab.sentry.SentryService`` exactly as it sets it up (its own code runs); ``ours``,
``asab_sentry.SentryService``. Hot paths use a no-op transport; the storm uses a real HTTP endpoint on
127.0.0.1 (a separate process).

Every round runs each set-up of a path one after another, in an order rotated between rounds; the table shows
the median over rounds and, for ratios, the median of the per-round ratios with their range (min-max). The
machine is usually shared and noisy: compare ratios, and run it more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src")
SETUPS = ("plain", "sdk", "ours")
DSN_NOWHERE = "http://benchmark@127.0.0.1:9/1"  # port 9 (discard) refuses; the no-op transport replaces it
#: The delivery mode of "ours" in the storm (``[sentry] delivery``): the one that meets the goal; the other runs beside.
STORM_DELIVERY = "process"
OTHER_DELIVERY = "threads"
SCALE = 1.0  # iterations per measurement, relative; --quick lowers it (workers get it as a parameter)


# ---------------------------------------------------------------------------------------------------------
# Worker side: one set-up, one path, one measurement, one JSON line on stdout.


def rss_mb() -> float:
	with open("/proc/self/status") as f:
		for line in f:
			if line.startswith("VmRSS:"):
				return int(line.split()[1]) / 1024
	return float("nan")


def quiet_root_logging():
	"""The same logging in every set-up: a formatting handler writing to /dev/null, root level INFO."""
	import logging

	root = logging.getLogger()
	kept = [h for h in root.handlers if type(h).__name__ == "SentryLogHandler"]
	stream = logging.StreamHandler(open(os.devnull, "w"))
	stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
	root.handlers[:] = kept + [stream]
	root.setLevel(logging.INFO)


class NullTransportMixin:
	def capture_envelope(self, envelope):
		pass


def null_transport():
	import sentry_sdk.transport

	class NullTransport(NullTransportMixin, sentry_sdk.transport.Transport):
		pass

	return NullTransport()


def setup(kind: str, traces_sample_rate: float = 0.0, dsn: str | None = None, delivery: str | None = None):
	"""Return the service object the application would call (None for plain)."""
	import asab

	if kind == "plain":
		# An asab application without Sentry: asab's own logging (struct_data) is part of every set-up's call.
		asab.Application(args=[])
		quiet_root_logging()
		assert "sentry_sdk" not in sys.modules
		return None
	import warnings

	warnings.simplefilter("ignore", DeprecationWarning)  # asab.sentry's span() warns on every call
	asab.Config.read_dict(
		{"sentry": {"data_source_name": dsn or DSN_NOWHERE, "traces_sample_rate": str(traces_sample_rate)}}
	)
	if delivery is not None and kind == "ours":
		asab.Config.read_dict({"sentry": {"delivery": delivery}})
	app = asab.Application(args=[])
	if kind == "sdk":
		import asab.sentry
		import sentry_sdk

		svc = asab.sentry.SentryService(app)
		if dsn is None:
			client = sentry_sdk.get_client()
			client.transport.kill()
			client.transport = null_transport()
	else:
		sys.path.insert(0, SRC)
		import asab_sentry

		svc = asab_sentry.SentryService(app, transport=None if dsn else null_transport())
		if dsn is None:
			# Hot paths measure the steady state: the start-up's warm-up thread (sentry-sdk's list of installed
			# distributions, built off the loop) takes the interpreter lock now and then for a few hundred ms.
			from asab_sentry import _sdk

			_sdk.wait_warm_up(timeout=30)
	quiet_root_logging()
	return svc


def innermost(table, depth):
	row = {"id": depth, "table": table}  # noqa: F841
	raise KeyError(table)


def middle(table):
	attempts = [1, 2, 3]  # noqa: F841
	innermost(table, len(table))


def timed(operation, n: int, batches: int) -> float:
	"""Median µs per operation over ``batches`` batches of ``n`` (after one warm-up batch)."""
	n = max(1, int(n * SCALE))
	batches = batches if SCALE == 1.0 else 1
	for _ in range(n):
		operation()
	results = []
	for _ in range(batches):
		start = time.perf_counter()
		for _ in range(n):
			operation()
		results.append((time.perf_counter() - start) / n * 1e6)
	return statistics.median(results)


def work_log(kind):
	import logging

	setup(kind)
	logger = logging.getLogger("bench")
	return timed(lambda: logger.info("user %s logged in", "alice"), 20000, 5)


def work_capture(kind, fresh_breadcrumbs: bool = False):
	import logging

	svc = setup(kind)
	logger = logging.getLogger("bench")
	for n in range(150):
		logger.info("user %s logged in", n)

	def capture():
		if fresh_breadcrumbs:
			for n in range(100):
				logger.info("user %s logged in", n)
		try:
			middle("users")
		except KeyError as e:
			svc.capture_exception(e)

	return timed(capture, 40 if fresh_breadcrumbs else 200, 5)


def work_trace(kind, rate):
	svc = setup(kind, traces_sample_rate=rate)

	def trace():
		with svc.transaction("task", "bench"):
			with svc.span("db", "query"):
				pass

	return timed(trace, 2000, 5)


def work_startup(kind):
	import asab

	asab.Config.read_dict({"sentry": {"data_source_name": DSN_NOWHERE}})
	app = asab.Application(args=[])
	start = time.perf_counter()
	if kind == "sdk":
		import asab.sentry as module
	else:
		sys.path.insert(0, SRC)
		import asab_sentry as module
	imported = time.perf_counter()
	module.SentryService(app)
	done = time.perf_counter()
	return {"ms": (done - imported) * 1e3, "with_import_ms": (done - start) * 1e3, "aiohttp": "aiohttp" in sys.modules}


def work_memory(kind, count):
	svc = setup(kind, traces_sample_rate=0.0)

	async def one_task():
		before = None
		for n in range(count):
			with svc.transaction("task", "loop"):
				with svc.span("db", "query"):
					pass
			if n == count // 10:
				before = rss_mb()
		return before, rss_mb()

	before, after = svc.App.Loop.run_until_complete(one_task())
	return {"before": before, "after": after, "growth": after - before}


def thread_cpu() -> dict[str, float]:
	"""CPU seconds (user + system) of this process's threads by role, and of the delivery process if there is one."""
	import threading

	tick = os.sysconf("SC_CLK_TCK")
	names = {t.native_id: t.name for t in threading.enumerate()}
	roles = {
		"MainThread": "main",
		"asab-sentry-prepare": "prepare",
		"asab-sentry-feeder": "feeder",
		"asab-sentry-status": "status",
	}
	cpu: dict[str, float] = {}

	def seconds(path: str) -> float:
		with open(path) as f:
			fields = f.read().rsplit(")", 1)[1].split()
		return (int(fields[11]) + int(fields[12])) / tick

	for tid in os.listdir("/proc/self/task"):
		name = names.get(int(tid), "other")
		role = roles.get(name, "senders" if name.startswith("asab-sentry-delivery") else "other")
		try:
			cpu[role] = cpu.get(role, 0.0) + seconds("/proc/self/task/{}/stat".format(tid))
		except OSError:
			pass
	return cpu


def child_cpu(svc) -> float | None:
	pid = getattr(getattr(svc, "Delivery", None), "Pid", None)
	if pid is None:
		return None
	try:
		with open("/proc/{}/stat".format(pid)) as f:
			fields = f.read().rsplit(")", 1)[1].split()
		return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
	except OSError:
		return None


def child_rss(svc) -> float | None:
	try:
		with open("/proc/{}/status".format(svc.Delivery.Pid)) as f:
			for line in f:
				if line.startswith("VmRSS:"):
					return int(line.split()[1]) / 1024
	except (OSError, AttributeError, TypeError):
		pass
	return None


def work_storm(kind, dsn, rate, seconds, expect_delivery, delivery=None):
	"""``rate`` errors per second logged with their exception from tasks on the loop; the loop's worst lag."""
	import logging

	svc = setup(kind, dsn=dsn, delivery=delivery)
	logger = logging.getLogger("bench.storm")
	# The application's loop: where asab-sentry installed its hooks.
	loop = svc.App.Loop if svc is not None else asyncio.new_event_loop()
	max_lag = 0.0
	running = True

	async def ticker():
		nonlocal max_lag
		while running:
			start = time.perf_counter()
			await asyncio.sleep(0.005)
			max_lag = max(max_lag, time.perf_counter() - start - 0.005)

	async def storm():
		sent = 0
		start = time.perf_counter()
		while True:
			now = time.perf_counter() - start
			if now >= seconds:
				return sent, now
			due = int(now * rate)
			while sent < due and time.perf_counter() - start < seconds:
				try:
					middle("users")
				except KeyError:
					logger.exception("request %d failed", sent)
				sent += 1
				if sent % 10 == 0:
					await asyncio.sleep(0)  # errors come from many tasks: others get their turn
			await asyncio.sleep(0.001)

	async def main():
		nonlocal running
		tick = asyncio.ensure_future(ticker())
		await asyncio.sleep(0.2)
		rss_before = rss_mb()
		sent, elapsed = await storm()
		await asyncio.sleep(0.2)
		running = False
		await tick
		result = {
			"lag_ms": max_lag * 1e3,
			"sent": sent,
			"rate": sent / elapsed,
			"rss_growth": rss_mb() - rss_before,
		}
		if svc is not None and expect_delivery:
			import sentry_sdk

			await loop.run_in_executor(None, sentry_sdk.get_client().flush, 60)
		result["cpu"] = thread_cpu()
		child = child_cpu(svc)
		if child is not None:
			result["cpu"]["delivery process"] = child
			result["child_rss"] = child_rss(svc)
		return result

	result = loop.run_until_complete(main())
	if getattr(svc, "Delivery", None) is not None:  # the delivery package's counters, when present
		result["delivery"] = dict(svc.Delivery.Losses.Counters)
	return result


def worker(args):
	global SCALE
	kind, path = args.worker
	params = json.loads(args.params or "{}")
	SCALE = params.pop("scale", 1.0)
	if path == "log":
		result = work_log(kind)
	elif path == "capture":
		result = work_capture(kind)
	elif path == "capture_fresh":
		result = work_capture(kind, fresh_breadcrumbs=True)
	elif path == "trace_sampled":
		result = work_trace(kind, 1.0)
	elif path == "trace_unsampled":
		result = work_trace(kind, 0.0)
	elif path == "startup":
		result = work_startup(kind)
	elif path == "memory":
		result = work_memory(kind, params["count"])
	elif path == "storm":
		result = work_storm(
			kind, params["dsn"], params["rate"], params["seconds"], params["deliver"], params.get("delivery")
		)
	else:
		raise SystemExit("unknown path {}".format(path))
	sys.stdout.write(json.dumps(result) + "\n")
	sys.stdout.flush()
	os._exit(0)  # no exit flush: a never-answering endpoint would hold the process for shutdown_timeout


# ---------------------------------------------------------------------------------------------------------
# Endpoint side: a Sentry ingest endpoint that answers at once (and counts events), or never answers.


class Endpoint:
	def __init__(self, answer: bool):
		self.Answer = answer
		self.Events = 0
		self.Envelopes = 0

	async def handle(self, reader, writer):
		try:
			while True:
				head = await reader.readuntil(b"\r\n\r\n")
				lines = head.decode("latin-1").split("\r\n")
				headers = {}
				for line in lines[1:]:
					if ":" in line:
						k, v = line.split(":", 1)
						headers[k.strip().lower()] = v.strip()
				body = await reader.readexactly(int(headers.get("content-length", "0")))
				if lines[0].startswith("GET /count"):
					reply = json.dumps({"events": self.Events, "envelopes": self.Envelopes}).encode()
					writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply))
					await writer.drain()
					continue
				if not self.Answer:
					continue  # read everything, answer nothing
				self.count(body, headers.get("content-encoding", ""))
				writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
				await writer.drain()
		except (asyncio.IncompleteReadError, ConnectionError):
			pass
		finally:
			writer.close()

	def count(self, body: bytes, encoding: str) -> None:
		try:
			if encoding == "gzip":
				body = gzip.decompress(body)
			elif encoding == "br":
				import brotli

				body = brotli.decompress(body)
			elif encoding == "deflate":
				body = zlib.decompress(body)
		except Exception:
			return
		self.Envelopes += 1
		self.Events += body.count(b'"type":"event"')


def endpoint(args):
	async def serve():
		ep = Endpoint(answer=args.endpoint == "fast")
		server = await asyncio.start_server(ep.handle, "127.0.0.1", 0)
		sys.stdout.write("{}\n".format(server.sockets[0].getsockname()[1]))
		sys.stdout.flush()
		await server.serve_forever()

	asyncio.run(serve())


class RunningEndpoint:
	def __init__(self, answer: bool):
		self.Process = subprocess.Popen(
			[sys.executable, __file__, "--endpoint", "fast" if answer else "never"],
			stdout=subprocess.PIPE,
			text=True,
		)
		self.Port = int(self.Process.stdout.readline())
		self.Dsn = "http://benchmark@127.0.0.1:{}/1".format(self.Port)

	def count(self) -> dict:
		with urllib.request.urlopen("http://127.0.0.1:{}/count".format(self.Port), timeout=30) as r:
			return json.loads(r.read())

	def stop(self):
		self.Process.terminate()
		self.Process.wait(timeout=30)


# ---------------------------------------------------------------------------------------------------------
# Driver: interleaved rounds of fresh worker processes, one table.


def run_worker(kind: str, path: str, timeout: float = 900, **params) -> dict | float:
	env = dict(os.environ)
	for name in list(env):
		if name.startswith("SENTRY_"):
			del env[name]
	out = subprocess.run(
		[sys.executable, __file__, "--worker", kind, path, "--params", json.dumps(dict(params, scale=SCALE))],
		capture_output=True,
		text=True,
		timeout=timeout,
		env=env,
		cwd=tempfile.gettempdir(),  # no MANIFEST.json or config of this checkout
	)
	if out.returncode != 0:
		raise RuntimeError("worker {} {} failed:\n{}".format(kind, path, out.stderr[-3000:]))
	return json.loads(out.stdout.strip().splitlines()[-1])


def rounds_of(paths: dict[str, tuple[str, ...]], rounds: int, progress) -> dict[str, dict[str, list]]:
	results: dict[str, dict[str, list]] = {path: {kind: [] for kind in kinds} for path, kinds in paths.items()}
	for r in range(rounds):
		for path, kinds in paths.items():
			order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
			for kind in order:
				results[path][kind].append(run_worker(kind, path))
		progress("round {}/{} done".format(r + 1, rounds))
	return results


def ratio_cell(numerators: list[float], denominators: list[float]) -> str:
	ratios = [n / d for n, d in zip(numerators, denominators, strict=True)]
	return "{:.2f}x [{:.2f}-{:.2f}]".format(statistics.median(ratios), min(ratios), max(ratios))


def fmt(value: float | None, unit: str = "") -> str:
	if value is None:
		return "-"
	if value >= 100:
		return "{:.0f}{}".format(value, unit)
	return "{:.1f}{}".format(value, unit)


def table(args) -> None:
	progress = (lambda message: print("  ... " + message, file=sys.stderr, flush=True)) if not args.silent else print
	rounds = args.rounds or 7
	storm_seconds = 5.0
	memory_count = 1_000_000
	if args.quick:
		global SCALE
		rounds, storm_seconds, memory_count, SCALE = 1, 0.5, 2000, 0.02
	rows: list[tuple[str, ...]] = []
	only = set(args.only.split(",")) if args.only else {"hot", "startup", "storm", "memory"}

	hot = {}
	if "hot" in only:
		hot = rounds_of(
			{
				"log": SETUPS,
				"capture": ("sdk", "ours"),
				"capture_fresh": ("sdk", "ours"),
				"trace_sampled": ("sdk", "ours"),
				"trace_unsampled": ("sdk", "ours"),
			},
			rounds,
			progress,
		)
	labels = {
		"log": ("INFO log call, breadcrumbs on (µs)", "<=1.15x plain"),
		"capture": ("capture_exception, 3 frames, 100 breadcrumbs pending (µs)", "<=0.30x sdk"),
		"capture_fresh": ("100 new breadcrumbs + capture_exception (µs)", "-"),
		"trace_sampled": ("transaction + span, sampled (µs)", "<=0.60x sdk"),
		"trace_unsampled": ("transaction + span, unsampled (µs)", "<=0.90x sdk"),
	}
	for path, by_kind in hot.items():
		label, goal = labels[path]
		plain = by_kind.get("plain")
		rows.append(
			(
				label,
				fmt(statistics.median(plain)) if plain else "-",
				fmt(statistics.median(by_kind["sdk"])),
				fmt(statistics.median(by_kind["ours"])),
				ratio_cell(by_kind["ours"], plain) if plain else "-",
				ratio_cell(by_kind["ours"], by_kind["sdk"]),
				goal,
			)
		)

	startup = rounds_of({"startup": ("sdk", "ours")}, rounds, progress)["startup"] if "startup" in only else {}
	aiohttp = ", aiohttp imported by ours" if startup and any(r["aiohttp"] for r in startup["ours"]) else ""
	for key, label in (
		()
		if not startup
		else (
			("ms", "SentryService(app), no asab.web (ms){}".format(aiohttp)),
			("with_import_ms", "  same, with importing the module (ms)"),
		)
	):
		sdk_ms = [r[key] for r in startup["sdk"]]
		ours_ms = [r[key] for r in startup["ours"]]
		rows.append(
			(
				label,
				"-",
				fmt(statistics.median(sdk_ms)),
				fmt(statistics.median(ours_ms)),
				"-",
				ratio_cell(ours_ms, sdk_ms),
				"<=20 ms" if key == "ms" else "-",
			)
		)

	# The storm runs ours in both delivery modes, side by side; the table's "ours" column is STORM_DELIVERY.
	variants = {
		"plain": ("plain", None),
		"sdk": ("sdk", None),
		"ours": ("ours", STORM_DELIVERY),
		"ours_other": ("ours", OTHER_DELIVERY),
	}
	storm_cpu: dict[tuple[str, str], dict[str, list]] = {}
	for answer in (True, False) if "storm" in only else ():
		ep = RunningEndpoint(answer)
		try:
			storm: dict[str, list] = {name: [] for name in variants}
			storm_rounds = max(1, rounds // 3)
			names = list(variants)
			for r in range(storm_rounds):
				for name in names[r % len(names) :] + names[: r % len(names)]:
					kind, delivery = variants[name]
					before = ep.count() if answer else None
					result = run_worker(
						kind,
						"storm",
						dsn=ep.Dsn,
						rate=2000,
						seconds=storm_seconds,
						deliver=answer and kind != "plain",
						delivery=delivery,
					)
					if answer and kind != "plain":
						time.sleep(0.5)
						result["delivered"] = ep.count()["events"] - before["events"]
					storm[name].append(result)
			progress("storm ({} endpoint) done".format("fast" if answer else "never answering"))
		finally:
			ep.stop()
		name = "fast endpoint" if answer else "endpoint never answering"
		for variant in ("ours", "ours_other"):
			for result in storm[variant]:
				cpu = result.get("cpu", {})
				roles = storm_cpu.setdefault((variants[variant][1], name), {})
				per_error = 1e6 / max(1, result["sent"])
				roles.setdefault("main", []).append(cpu.get("main", 0.0) * per_error)
				threads = sum(v for k, v in cpu.items() if k not in ("main", "other", "delivery process"))
				roles.setdefault("threads", []).append(threads * per_error)
				roles.setdefault("process", []).append(cpu.get("delivery process", 0.0) * per_error)
		lag = {kind: [r["lag_ms"] for r in storm[kind]] for kind in variants}
		rows.append(
			(
				"storm 2000 errors/s {:g} s, {}: loop max lag (ms); ours: delivery = {}".format(
					storm_seconds, name, STORM_DELIVERY
				),
				fmt(statistics.median(lag["plain"])),
				fmt(statistics.median(lag["sdk"])),
				fmt(statistics.median(lag["ours"])),
				ratio_cell(lag["ours"], lag["plain"]),
				ratio_cell(lag["ours"], lag["sdk"]),
				"<=20 ms",
			)
		)

		rows.append(
			(
				"  same: {}; errors/s achieved".format(
					"events delivered/sent" if answer else "RSS growth (+ delivery process RSS)"
				),
				"{:.0f}/s".format(statistics.median(r["rate"] for r in storm["plain"])),
				"{}, {:.0f}/s".format(
					storm_share(storm["sdk"], answer), statistics.median(r["rate"] for r in storm["sdk"])
				),
				"{}, {:.0f}/s".format(
					storm_share(storm["ours"], answer), statistics.median(r["rate"] for r in storm["ours"])
				),
				"-",
				"-",
				"every error" if answer else "bounded",
			)
		)
		rows.append(
			(
				"  same, ours with delivery = {}: loop max lag (ms); {}".format(
					OTHER_DELIVERY, "delivered/sent" if answer else "RSS growth"
				),
				"-",
				"-",
				"{}; {}, {:.0f}/s".format(
					fmt(statistics.median(lag["ours_other"])),
					storm_share(storm["ours_other"], answer),
					statistics.median(r["rate"] for r in storm["ours_other"]),
				),
				ratio_cell(lag["ours_other"], lag["plain"]),
				ratio_cell(lag["ours_other"], lag["sdk"]),
				"-",
			)
		)

	memory = (
		{kind: run_worker(kind, "memory", count=memory_count) for kind in ("sdk", "ours")} if "memory" in only else {}
	)
	progress("memory done")
	if memory:
		rows.append(
			(
				"RSS growth over {:,} transaction()+span() in one task (MB)".format(memory_count),
				"-",
				"{:+.1f}".format(memory["sdk"]["growth"]),
				"{:+.1f}".format(memory["ours"]["growth"]),
				"-",
				"-",
				"flat",
			)
		)

	print_table(rows, rounds, smoke=args.quick)
	if storm_cpu:
		print()
		print(
			"storm, ours: CPU per error sent (µs, medians; /proc/self/task and the delivery process's /proc/PID/stat)"
		)
		print("| delivery, endpoint | event loop's thread | delivery threads of the service | delivery process |")
		print("|---|---|---|---|")
		for (mode, endpoint_name), roles in storm_cpu.items():
			print(
				"| {}, {} | {:.0f} | {:.0f} | {:.0f} |".format(
					mode,
					endpoint_name,
					statistics.median(roles["main"]),
					statistics.median(roles["threads"]),
					statistics.median(roles["process"]),
				)
			)


def storm_share(results: list[dict], answer: bool) -> str:
	"""Events delivered/sent in the last round (fast endpoint), or the median RSS growth (never answering)."""
	if answer:
		return "{}/{}".format(results[-1].get("delivered", "-"), results[-1]["sent"])
	growth = "+{:.0f} MB".format(statistics.median(r["rss_growth"] for r in results))
	child = [r["child_rss"] for r in results if r.get("child_rss") is not None]
	return growth + (" (+ {:.0f} MB)".format(statistics.median(child)) if child else "")


def print_table(rows, rounds, smoke: bool = False) -> None:
	import importlib.metadata

	def version(name):
		try:
			return importlib.metadata.version(name)
		except importlib.metadata.PackageNotFoundError:
			return "?"

	print(
		"asab-sentry benchmarks: Python {}, sentry-sdk {}, asab {}, {} ({} CPUs, load average {})".format(
			platform.python_version(),
			version("sentry-sdk"),
			version("asab"),
			platform.machine(),
			os.cpu_count(),
			" ".join("{:.1f}".format(x) for x in os.getloadavg()),
		)
	)
	print(
		"medians over {} interleaved rounds of fresh processes; ratios: median [min-max] of per-round ratios".format(
			rounds
		)
	)
	if smoke:
		print("--quick: a smoke run with few iterations; these numbers mean nothing")
	header = ("path", "plain", "sdk", "ours", "ours/plain", "ours/sdk", "goal")
	widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
	line = "| " + " | ".join("{:<%d}" % w for w in widths) + " |"
	print(line.format(*header))
	print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
	for row in rows:
		print(line.format(*row))


# ---------------------------------------------------------------------------------------------------------
# Collector throughput (separate: it measures the local collector, not the integration).


def collector(quick: bool) -> None:
	"""Envelopes per second into the collector from 1 and 4 concurrent sentry-sdk clients: collector.py."""
	sys.path.insert(0, HERE)
	import collector as collector_benchmark

	collector_benchmark.main(["--clients", "1", "--count", "30"] if quick else [])


def main():
	parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
	parser.add_argument("what", nargs="?", default="table", choices=("table", "collector"))
	parser.add_argument(
		"--quick", action="store_true", help="a smoke run: 1 round, few iterations, meaningless numbers"
	)
	parser.add_argument("--rounds", type=int, help="interleaved rounds (default 7)")
	parser.add_argument("--only", help="some sections only, comma-separated: hot, startup, storm, memory")
	parser.add_argument("--silent", action="store_true", help=argparse.SUPPRESS)
	parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
	parser.add_argument("--params", help=argparse.SUPPRESS)
	parser.add_argument("--endpoint", choices=("fast", "never"), help=argparse.SUPPRESS)
	args = parser.parse_args()
	if args.worker:
		worker(args)
	elif args.endpoint:
		endpoint(args)
	elif args.what == "collector":
		collector(args.quick)
	else:
		table(args)


if __name__ == "__main__":
	main()
