#!/usr/bin/env python3
"""
A Sentry envelope endpoint for benchmarks, in its own process (so that it does not share the GIL with the
client measured): answers every POST with 200 at once, or 429 over a rate; GET /stats returns the counts and
the peak number of requests in one second.

	python3 benchmarks/endpoint.py PORT [--rate-limit N] [--retry-after SECONDS]

Prints "ready" on stdout when it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web


def main() -> None:
	parser = argparse.ArgumentParser()
	parser.add_argument("port", type=int)
	parser.add_argument("--rate-limit", type=int, default=0, help="accepted requests per second; over it: 429")
	parser.add_argument("--retry-after", type=float, default=1.0)
	args = parser.parse_args()
	state = {"accepted": 0, "limited": 0, "per_second": {}, "window": 0, "in_window": 0}

	async def envelope(request: web.Request) -> web.Response:
		await request.read()
		second = int(time.monotonic())
		state["per_second"][second] = state["per_second"].get(second, 0) + 1
		if args.rate_limit:
			if second != state["window"]:
				state["window"], state["in_window"] = second, 0
			if state["in_window"] >= args.rate_limit:
				state["limited"] += 1
				return web.Response(status=429, headers={"Retry-After": "{:g}".format(args.retry_after)})
			state["in_window"] += 1
		state["accepted"] += 1
		return web.json_response({"id": "0"})

	async def stats(request: web.Request) -> web.Response:
		per_second = state["per_second"]
		return web.json_response(
			{
				"accepted": state["accepted"],
				"limited": state["limited"],
				"peak_per_second": max(per_second.values()) if per_second else 0,
			}
		)

	async def reset(request: web.Request) -> web.Response:
		state.update({"accepted": 0, "limited": 0, "per_second": {}})
		return web.json_response({})

	app = web.Application(client_max_size=20 * 1024 * 1024)
	app.router.add_post("/api/{project}/envelope/", envelope)
	app.router.add_get("/stats", stats)
	app.router.add_post("/reset", reset)

	async def run() -> None:
		runner = web.AppRunner(app, access_log=None)
		await runner.setup()
		await web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024).start()
		print("ready", flush=True)
		await asyncio.Event().wait()

	asyncio.run(run())


if __name__ == "__main__":
	main()
