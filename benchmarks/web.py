#!/usr/bin/env python3
"""
Benchmark (measured, never asserted): an asab.web "hello world" under wrk on 127.0.0.1, side by side in one run:

- plain       asab.web, no Sentry at all
- sdk off     sentry-sdk set up as asab's own ``asab.sentry.SentryService`` does (created in ``initialize()``, as its
              docstring shows: AioHttpIntegration, AsyncioIntegration, LoggingIntegration), traces_sample_rate 0
- sdk 1.0     the same at traces_sample_rate 1.0
- ours off    asab_sentry.SentryService, traces_sample_rate unset (0)
- ours 1.0    asab_sentry.SentryService, traces_sample_rate 1.0
- ours 1.0 process   the same with ``[sentry] delivery = process`` (the HTTP work in a delivery process: its CPU
              time is the "process" column, not part of the server's)

Per configuration: requests/s (median of the rounds, rounds interleaved), ratio to plain, p50/p99 latency (wrk),
CPU time of the server process per request, and transactions sent by the service (handed to its transport after
sampling) vs received by a Sentry endpoint in its own process that answers at once and counts them, and for ours
the delivery's drops by reason (`asab_sentry.delivery.losses`).

	python3 benchmarks/web.py                      # 3 rounds of 5 s, 16 connections
	python3 benchmarks/web.py --rounds 5 --duration 10
	python3 benchmarks/web.py --modes "plain,ours 1.0" --max-concurrent-requests 1

Needs wrk (Debian/Ubuntu: ``apt-get update && apt-get install -y wrk``). The machine running it should be quiet:
the server, wrk and the endpoint share its cores. Compare the ratios, run it more than once.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("plain", "sdk off", "sdk 1.0", "ours off", "ours 1.0", "ours 1.0 process")

SERVER = r"""
import asyncio, logging, os, sys
import aiohttp.web, asab, asab.web

mode, dsn, senders = sys.argv[1], sys.argv[2], sys.argv[3]
rate = "1.0" if "1.0" in mode else "0"
asab.Config.read_dict({"sentry": {"data_source_name": dsn, "traces_sample_rate": rate}})
if senders:
	asab.Config.read_dict({"sentry": {"max_concurrent_requests": senders}})
if mode.endswith("process"):
	asab.Config.read_dict({"sentry": {"delivery": "process"}})
sent = [0]


class Hello(asab.Application):
	def __init__(self):
		super().__init__(args=[])
		if mode.startswith("ours"):
			import asab_sentry
			self.Sentry = asab_sentry.SentryService(self)
		self.add_module(asab.web.Module)
		self.Container = asab.web.WebContainer(self.get_service("asab.WebService"), "web", config={"listen": "127.0.0.1 0"})
		self.Container.WebApp.router.add_get("/", self.hello)
		self.PubSub.subscribe("WebContainer.started!", self.started)

	async def initialize(self):
		if mode.startswith("sdk"):
			import asab.sentry  # asab's own SentryService, created where its docstring shows
			self.Sentry = asab.sentry.SentryService(self)
		if mode != "plain":
			import sentry_sdk
			transport = sentry_sdk.get_client().transport
			send = transport.capture_envelope

			def counting(envelope):  # transactions handed to the transport
				sent[0] += sum(1 for item in envelope.items if item.type == "transaction")
				return send(envelope)

			transport.capture_envelope = counting

	def started(self, message, container):
		import threading
		# The threads' native ids and names, for the CPU time per thread (/proc/<pid>/task/<tid>/stat).
		names = " ".join("{}={}".format(t.native_id, t.name.replace(" ", "_")) for t in threading.enumerate())
		print("THREADS", names, flush=True)
		print("PORT", container.Addresses[0][1], flush=True)

	async def hello(self, request):
		return aiohttp.web.Response(text="Hello, world")

	async def main(self):
		await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
		self.stop()

	async def finalize(self):
		if mode.startswith("sdk"):
			import sentry_sdk  # asab.sentry does not flush at exit itself; its atexit flush waits 2 s at most
			await asyncio.get_running_loop().run_in_executor(None, sentry_sdk.flush, 10)


app = Hello()
app.run()
print("SENT", sent[0], flush=True)
delivery = getattr(getattr(app, "Sentry", None), "Delivery", None)
if delivery is not None:  # ours: what the delivery dropped, by reason
	delivery.kill()  # as at exit: what was not delivered within shutdown_timeout counts as dropped (shutdown)
	drops = {k: v for k, v in delivery.Losses.Counters.items() if k.startswith("dropped_")}
	print("DROPS", " ".join("{}={}".format(k[len("dropped_"):], v) for k, v in sorted(drops.items())), flush=True)
"""


def wrk(url: str, duration: float, connections: int) -> dict:
	out = subprocess.run(
		["wrk", "-t1", "-c{}".format(connections), "-d{}s".format(int(round(duration))), "--latency", url],
		capture_output=True,
		text=True,
		check=True,
	).stdout
	result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
	result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
	for pct in ("50", "99"):
		value, unit = re.search(r"^\s+{}%\s+([\d.]+)(us|ms|s)\s*$".format(pct), out, re.M).groups()
		result["p" + pct] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
	errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
	result["errors"] = int(errors.group(1)) if errors else 0
	return result


def cpu_seconds(pid: int, tid: int | None = None) -> float:
	path = "/proc/{}/stat".format(pid) if tid is None else "/proc/{}/task/{}/stat".format(pid, tid)
	try:
		with open(path) as f:
			fields = f.read().rsplit(")", 1)[1].split()
	except FileNotFoundError:  # a thread that ended
		return 0.0
	return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu(pid: int) -> float:
	"""CPU seconds of the server's child processes (the delivery process of ``delivery = process``)."""
	total = 0.0
	for entry in os.listdir("/proc"):
		if not entry.isdigit():
			continue
		try:
			with open("/proc/{}/stat".format(entry)) as f:
				fields = f.read().rsplit(")", 1)[1].split()
		except OSError:
			continue
		if int(fields[1]) == pid:
			total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
	return total


def thread_group(name: str) -> str:
	"""The column a thread's CPU time is shown in: the event loop, the preparing thread, the senders, others."""
	if name == "MainThread":
		return "loop"
	if name == "asab-sentry-prepare":
		return "prepare"
	if name.startswith("asab-sentry-delivery-"):
		return "senders"
	return "other"


def thread_cpu(pid: int, threads: dict[int, str]) -> dict[str, float]:
	"""CPU seconds per thread group of the server (threads not named at start, e.g. executors: other)."""
	out = {"loop": 0.0, "prepare": 0.0, "senders": 0.0, "other": 0.0}
	for tid in os.listdir("/proc/{}/task".format(pid)):
		out[thread_group(threads.get(int(tid), ""))] += cpu_seconds(pid, int(tid))
	return out


RECEIVER = r"""
import asyncio, gzip, json, sys
from aiohttp import web

counts = {"envelopes": 0, "transactions": 0}


def transactions(body):
	# Envelope: a header line, then items: a header line and a payload (of "length" bytes, else to the newline).
	n, pos, end = 0, body.find(b"\n") + 1, len(body)
	while 0 < pos < end:
		nl = body.find(b"\n", pos)
		nl = end if nl < 0 else nl
		header = json.loads(body[pos:nl] or b"{}")
		pos = nl + 1
		length = header.get("length")
		if length is None:
			nl = body.find(b"\n", pos)
			pos = (end if nl < 0 else nl) + 1
		else:
			pos += length + 1
		n += header.get("type") == "transaction"
	return n


async def envelope(request):
	body = await request.read()  # aiohttp has already decoded a gzip or deflate Content-Encoding
	if body[:2] == b"\x1f\x8b":
		body = gzip.decompress(body)
	counts["envelopes"] += 1
	counts["transactions"] += transactions(body)
	return web.json_response({"id": "0"})


async def main():
	app = web.Application(client_max_size=20 * 1024 * 1024)
	app.router.add_post("/api/{project}/envelope/", envelope)
	runner = web.AppRunner(app, access_log=None)
	await runner.setup()
	site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
	await site.start()
	port = runner.addresses[0][1]
	print("http://public@127.0.0.1:{}/1".format(port), flush=True)
	reader = asyncio.StreamReader()
	loop = asyncio.get_running_loop()
	await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
	while await reader.readline():  # each line asks for the number of transactions received
		print(counts["transactions"], flush=True)
	await runner.cleanup()


asyncio.run(main())
"""


class Receiver:
	"""
	A Sentry endpoint in its own process that answers every envelope with 200 at once and counts the
	transactions in it (not the local collector: it stores ~600 envelopes/s and would be what is measured).
	"""

	def __init__(self, env: dict):
		self.Process = subprocess.Popen(
			[sys.executable, "-c", RECEIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
		)
		self.Dsn = self.Process.stdout.readline().strip()

	def transactions(self) -> int:
		self.Process.stdin.write("count\n")
		self.Process.stdin.flush()
		return int(self.Process.stdout.readline())

	def stop(self) -> None:
		self.Process.stdin.close()
		self.Process.wait(timeout=30)


def settle(receiver: Receiver, timeout: float = 30.0) -> int:
	"""The receiver's transaction count once it stopped changing for a second."""
	last, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
	while time.monotonic() < deadline:
		now = receiver.transactions()
		if now != last:
			last, since = now, time.monotonic()
		elif time.monotonic() - since > 1.0:
			break
		time.sleep(0.2)
	return last


def run_mode(mode: str, receiver: Receiver, duration: float, connections: int, env: dict, senders: str = "") -> dict:
	before = settle(receiver)
	server = subprocess.Popen(
		[sys.executable, "-c", SERVER, mode, receiver.Dsn, senders],
		stdin=subprocess.PIPE,
		stdout=subprocess.PIPE,
		stderr=subprocess.DEVNULL,
		text=True,
		env=env,
	)
	try:
		line = server.stdout.readline()
		threads = {}
		if line.startswith("THREADS"):
			for item in line.split()[1:]:
				tid, _, name = item.partition("=")
				threads[int(tid)] = name
			line = server.stdout.readline()
		if not line.startswith("PORT"):
			raise RuntimeError("{}: the server did not start".format(mode))
		url = "http://127.0.0.1:{}/".format(int(line.split()[1]))
		wrk(url, 1, connections)  # warm-up
		cpu = cpu_seconds(server.pid)
		per_thread = thread_cpu(server.pid, threads)
		receiver_cpu = cpu_seconds(receiver.Process.pid)
		process_cpu = children_cpu(server.pid)
		children = os.times()
		result = wrk(url, duration, connections)
		n = max(result["requests"], 1)
		result["cpu_us"] = (cpu_seconds(server.pid) - cpu) / n * 1e6
		after = thread_cpu(server.pid, threads)
		for group, seconds in after.items():
			result["cpu_" + group] = (seconds - per_thread[group]) / n * 1e6
		result["cpu_receiver"] = (cpu_seconds(receiver.Process.pid) - receiver_cpu) / n * 1e6
		result["cpu_process"] = (children_cpu(server.pid) - process_cpu) / n * 1e6
		done = os.times()
		result["cpu_wrk"] = (
			(done.children_user + done.children_system - children.children_user - children.children_system) / n * 1e6
		)
		out, _ = server.communicate("stop\n", timeout=60)
	finally:
		if server.poll() is None:
			server.kill()
	sent = re.search(r"SENT (\d+)", out or "")
	result["sent"] = int(sent.group(1)) if sent else 0
	drops = re.search(r"DROPS ?(.*)", out or "")
	result["drops"] = drops.group(1).strip() if drops else ""
	result["received"] = settle(receiver) - before
	return result


def main() -> int:
	parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
	parser.add_argument("--rounds", type=int, default=3)
	parser.add_argument("--duration", type=int, default=5, help="seconds of load per configuration and round")
	parser.add_argument("--connections", type=int, default=16)
	parser.add_argument(
		"--max-concurrent-requests",
		default="",
		help="[sentry] max_concurrent_requests of ours (the delivery's sender threads; default: the package's)",
	)
	parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, e.g. 'plain,ours off'")
	args = parser.parse_args()
	modes = [m.strip() for m in args.modes.split(",")]
	if "plain" not in modes or not set(modes) <= set(MODES):
		parser.error("--modes: a subset of {} including plain".format(", ".join(MODES)))
	if shutil.which("wrk") is None:
		print("wrk is not installed. On Debian/Ubuntu: apt-get update && apt-get install -y wrk", file=sys.stderr)
		return 2

	env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
	env["PYTHONPATH"] = os.pathsep.join([os.path.join(HERE, "..", "src"), env.get("PYTHONPATH", "")])
	receiver = Receiver(env)
	try:
		results: dict[str, list[dict]] = {m: [] for m in modes}
		for n in range(args.rounds):
			for mode in modes:
				results[mode].append(
					run_mode(mode, receiver, args.duration, args.connections, env, args.max_concurrent_requests)
				)
				r = results[mode][-1]
				print(
					"round {} {:<16} {:>8.0f} req/s  txn sent {} received {} {}".format(
						n + 1, mode, r["rps"], r["sent"], r["received"], r["drops"]
					),
					file=sys.stderr,
				)
	finally:
		receiver.stop()

	plain = statistics.median(r["rps"] for r in results["plain"])
	# The req/s ratio the server's own CPU time allows (less sensitive to a busy machine than req/s).
	plain_cpu = statistics.median(r["cpu_us"] for r in results["plain"])
	print(
		"asab.web hello world, wrk -c{} {} s x {} rounds (medians; transactions summed over rounds)".format(
			args.connections, args.duration, args.rounds
		)
	)
	print(
		"{:<16} {:>9} {:>8} {:>9} {:>9} {:>12} {:>10} {:>10} {:>10}".format(
			"", "req/s", "/plain", "p50 ms", "p99 ms", "CPU µs/req", "CPU /plain", "txn sent", "received"
		)
	)
	for mode in modes:
		rs = results[mode]
		rps = statistics.median(r["rps"] for r in rs)
		cpu = statistics.median(r["cpu_us"] for r in rs)
		print(
			"{:<16} {:>9.0f} {:>7.2f}x {:>9.2f} {:>9.2f} {:>12.0f} {:>9.2f}x {:>10} {:>10}".format(
				mode,
				rps,
				rps / plain,
				statistics.median(r["p50"] for r in rs),
				statistics.median(r["p99"] for r in rs),
				cpu,
				plain_cpu / cpu,
				sum(r["sent"] for r in rs) if mode != "plain" else "-",
				sum(r["received"] for r in rs) if mode != "plain" else "-",
			)
		)
	print()
	print("CPU µs per request, by thread of the server, and of the receiver and wrk (medians)")
	groups = ("loop", "prepare", "senders", "other", "process", "receiver", "wrk")
	print("{:<16} ".format("") + " ".join("{:>9}".format(g) for g in groups))
	for mode in modes:
		rs = results[mode]
		print(
			"{:<16} ".format(mode)
			+ " ".join("{:>9.0f}".format(statistics.median(r["cpu_" + g] for r in rs)) for g in groups)
		)
	for mode in modes:
		drops = [r["drops"] for r in results[mode] if r["drops"]]
		if mode.startswith("ours"):
			print("{}: dropped by our delivery (per round): {}".format(mode, "; ".join(drops) or "nothing"))
	return 0


if __name__ == "__main__":
	sys.exit(main())
