"""asab.web requests: identity on every request's events, tags per request, a failing handler reported once."""

import asyncio
import logging
import os
import socket

import aiohttp
import aiohttp.web
import asab
import asab.web

import asab_sentry
from helpers import configure, payloads

L = logging.getLogger("tests.web")


def free_port():
	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


class WebApp(asab.Application):
	def __init__(self, port):
		super().__init__(args=[])
		self.SentryService = asab_sentry.SentryService(self)
		router = asab.web.create_web_server(self, config={"listen": "127.0.0.1 {}".format(port)})
		router.add_get("/tagged/{name}", self.tagged)
		router.add_get("/fail", self.fail)
		self.Port = port
		self.BothTagged = asyncio.Event()
		self.Tagged = 0

	async def tagged(self, request):
		name = request.match_info["name"]
		self.SentryService.set_tag("customer", name)
		self.Tagged += 1
		if self.Tagged == 2:
			self.BothTagged.set()
		await self.BothTagged.wait()  # both requests are in flight, both tags set
		L.error("request for %s failed", name)
		return aiohttp.web.Response(text="ok")

	async def fail(self, request):
		raise RuntimeError("handler crashed")

	async def main(self):
		base = "http://127.0.0.1:{}".format(self.Port)
		try:
			async with aiohttp.ClientSession() as session:
				for _ in range(100):
					try:
						async with session.get(base + "/nothing"):
							break
					except aiohttp.ClientConnectionError:
						await asyncio.sleep(0.05)

				async def fetch(path):
					async with session.get(base + path) as response:
						return response.status

				self.Statuses = await asyncio.gather(fetch("/tagged/alice"), fetch("/tagged/bob"), fetch("/fail"))
		finally:
			self.stop()


def test_requests_keep_their_own_tags_and_identity(collector):
	os.environ["NODE_ID"] = "web-node"
	configure({"sentry": {"data_source_name": collector.dsn}})
	app = WebApp(free_port())
	app.run()
	assert app.Statuses == [200, 200, 500]
	events = payloads(collector, count=3)
	logged = {
		e["logentry"]["formatted"]: e
		for e in events
		if "logentry" in e and e["logentry"]["formatted"].startswith("request")
	}
	assert logged["request for alice failed"]["tags"]["customer"] == "alice"
	assert logged["request for bob failed"]["tags"]["customer"] == "bob"
	for event in events:
		assert event["tags"]["node_id"] == "web-node" and event["tags"]["appclass"] == "WebApp"
	crashes = [e for e in events if "exception" in e]
	assert len(crashes) == 1, "a failing handler is reported exactly once"
	assert crashes[0]["exception"]["values"][-1]["type"] == "RuntimeError"
	assert "customer" not in crashes[0]["tags"]
