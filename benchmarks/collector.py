#!/usr/bin/env python3
"""
Collector throughput: envelopes per second into ``asab-sentry collector`` (a separate process, SQLite in a
temporary directory) from 1 and from N concurrent sentry-sdk clients (separate processes, each sending
``--count`` messages through sentry-sdk's own transport), side by side in one run. Counted from the clients'
start until every client has flushed; "stored" is read back from the collector's ``/health``. The CPU time
the collector and the clients spent per envelope (Linux: /proc and wait4) is printed too: on a shared,
loaded machine envelopes/s says more about the neighbours than about the collector, CPU time per envelope
does not. Measured, never asserted: run it more than once.

	python3 benchmarks/collector.py                  # 1 and 4 clients, 3000 envelopes each
	python3 benchmarks/collector.py --clients 8 --count 2000
	python3 benchmarks/collector.py --baseline c7bed81  # the same, also with the collector of that commit
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

CLIENT = """
import sys, time, sentry_sdk
dsn, count = sys.argv[1], int(sys.argv[2])
sentry_sdk.init(dsn=dsn, default_integrations=False, transport_queue_size=count + 100)
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()  # start together
for n in range(count):
	sentry_sdk.capture_message("benchmark message {}".format(n % 10))
sentry_sdk.flush(timeout=300)
"""


def free_port() -> int:
	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


def health(port: int) -> dict:
	with urllib.request.urlopen("http://127.0.0.1:{}/health".format(port), timeout=10) as response:
		return json.loads(response.read())


def cpu_seconds(pid: int) -> float:
	"""User + system CPU seconds of a running process (Linux)."""
	with open("/proc/{}/stat".format(pid)) as f:
		fields = f.read().rsplit(")", 1)[1].split()
	return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def export(revision: str) -> str:
	"""The ``src`` directory of a git revision, extracted into a temporary directory."""
	target = tempfile.mkdtemp(prefix="asab-sentry-baseline-")
	archive = subprocess.run(["git", "-C", ROOT, "archive", revision, "src"], capture_output=True, check=True)
	subprocess.run(["tar", "-x", "-C", target], input=archive.stdout, check=True)
	return os.path.join(target, "src")


def run(clients: int, count: int, src: str = os.path.join(ROOT, "src")) -> tuple[float, int, float, float]:
	"""Seconds for ``clients`` × ``count`` envelopes, how many were stored, CPU seconds of the collector
	and of the clients while sending."""
	port = free_port()
	workdir = tempfile.mkdtemp(prefix="asab-sentry-bench-")
	env = dict(os.environ, PYTHONPATH=src)
	server = subprocess.Popen(
		[
			sys.executable,
			"-m",
			"asab_sentry.cli",
			"collector",
			"--port",
			str(port),
			"--storage",
			os.path.join(workdir, "bench.sqlite"),
			"--key",
			"asabsentry",
		],
		stdout=subprocess.DEVNULL,
		stderr=subprocess.DEVNULL,
		env=env,
	)
	procs = []
	try:
		for _ in range(300):
			try:
				health(port)
				break
			except OSError:
				time.sleep(0.1)
		dsn = "http://asabsentry@127.0.0.1:{}/1".format(port)
		procs = [
			subprocess.Popen(
				[sys.executable, "-c", CLIENT, dsn, str(count)],
				stdin=subprocess.PIPE,
				stdout=subprocess.PIPE,
				text=True,
				env=env,
			)
			for _ in range(clients)
		]
		for p in procs:
			p.stdout.readline()
		server_cpu = cpu_seconds(server.pid)
		client_cpu = sum(cpu_seconds(p.pid) for p in procs)
		start = time.perf_counter()
		for p in procs:
			p.stdin.write("go\n")
			p.stdin.flush()
		client_cpu_used = 0.0
		for p in procs:
			_, _, usage = os.wait4(p.pid, 0)  # the client's whole CPU time, exactly
			client_cpu_used += usage.ru_utime + usage.ru_stime
			p.returncode = 0
		elapsed = time.perf_counter() - start
		server_cpu = cpu_seconds(server.pid) - server_cpu
		return elapsed, int(health(port)["items"]), server_cpu, client_cpu_used - client_cpu
	finally:
		for p in procs:
			if p.poll() is None:
				p.kill()
		server.terminate()
		server.wait(timeout=30)


def main(argv: list[str] | None = None) -> None:
	parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
	parser.add_argument("--clients", type=int, default=4)
	parser.add_argument("--count", type=int, default=3000, help="envelopes per client")
	parser.add_argument("--baseline", metavar="REVISION", help="also measure the collector of this git revision")
	args = parser.parse_args(argv)
	versions = [("this tree", os.path.join(ROOT, "src"))]
	if args.baseline:
		versions.insert(0, (args.baseline, export(args.baseline)))
	print(
		"{:<22} {:>9} {:>9} {:>12} {:>18} {:>17}".format(
			"collector", "envelopes", "stored", "envelopes/s", "collector CPU/env", "clients CPU/env"
		)
	)
	for clients in sorted({1, args.clients}):
		for name, src in versions:
			elapsed, stored, server_cpu, client_cpu = run(clients, args.count, src)
			total = clients * args.count
			label = "{} client{}{}".format(clients, "" if clients == 1 else "s", ", " + name if args.baseline else "")
			print(
				"{:<22} {:>9} {:>9} {:>12.0f} {:>15.0f} µs {:>14.0f} µs".format(
					label,
					total,
					stored,
					stored / elapsed,
					server_cpu / max(stored, 1) * 1e6,
					client_cpu / total * 1e6,
				)
			)
	print("(the collector's ceiling on one free core: about 1e6 / its CPU µs per envelope)")


if __name__ == "__main__":
	main()
