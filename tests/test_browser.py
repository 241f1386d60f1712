"""The collector's web UI in a real browser: headless Chromium from Debian's packages (``apt-get install
chromium``, see .ci/run) driven by Playwright (never ``playwright install``): the issue list, an event with
its stack frame and a local variable, a new event appearing live, Clear."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from asab_sentry.collector.server import CollectorSettings, start_in_thread
from asab_sentry.collector.store import Store

CHROMIUM_ARGS = [
	"--headless",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-quic",
	"--no-first-run",
	"--disable-background-networking",
	"--disable-component-update",
	"--disable-sync",
]


def send(*args: str) -> None:
	"""Send the test data (tests/ui_data.py) from a client process: Playwright's sync API keeps an event loop
	running in this process's main thread, where the asab Application that sends would need its own."""
	process = subprocess.run(
		[sys.executable, os.path.join(os.path.dirname(__file__), "ui_data.py"), *args],
		capture_output=True,
		text=True,
		timeout=120,
	)
	assert process.returncode == 0, process.stderr[-3000:]


def chromium_path() -> str | None:
	for candidate in (os.environ.get("ASAB_SENTRY_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
		if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
			return candidate
	return None


def _skip(reason: str) -> None:
	print("test_browser skipped:", reason)
	pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
	try:
		from playwright.sync_api import sync_playwright
	except ImportError as e:
		_skip("playwright is not installed ({}); pip install -e '.[test]'".format(e))
	executable = chromium_path()
	if executable is None:
		_skip("no Chromium: /usr/bin/chromium is missing (apt-get install -y chromium, as .ci/run does)")
	with sync_playwright() as playwright:
		browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, timeout=60000)
		try:
			yield browser
		finally:
			browser.close()


@pytest.fixture
def page(browser):
	context = browser.new_context(viewport={"width": 1200, "height": 900})
	page = context.new_page()
	page.set_default_timeout(30000)
	errors: list[str] = []
	page.on("pageerror", lambda e: errors.append(str(e)))
	page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not _stream_gone(m) else None)
	yield page
	context.close()
	assert not errors, "JavaScript errors or CSP violations in the page: {}".format(errors)


def _stream_gone(message) -> bool:
	# The live updates' EventSource reconnects when the collector fixture has stopped before the page closed
	# (fixtures end in reverse order): that refusal is the test's teardown, not an error of the page.
	url = (message.location or {}).get("url", "")
	return "ERR_CONNECTION_REFUSED" in message.text and url.split("?")[0].endswith("/stream")


@pytest.fixture
def collector_with_data(tmp_path, referee):
	running = start_in_thread(Store(str(tmp_path / "browser.sqlite")), CollectorSettings())
	running.Collector.Listeners.append(referee.check_collector_envelope)
	try:
		send(running.dsn)
		yield running
	finally:
		running.stop()


def test_issue_list_event_frame_and_local_variable(page, collector_with_data):
	page.goto(collector_with_data.url + "/")
	issue = page.locator("tr.issue", has_text="KeyError")
	assert issue.locator("td.count").inner_text().strip() == "3"
	assert page.locator("tr.issue").count() == 3
	issue.locator("a.title").click()
	page.wait_for_url("**/events/*")
	assert page.locator(".exc-type").first.inner_text() == "KeyError"
	frame = page.locator("details.frame.in-app").filter(
		has=page.locator(".function", has_text=re.compile("^load_order$"))
	)
	assert frame.locator(".function").inner_text() == "load_order"
	assert "raise KeyError" in frame.locator("tr.current").inner_text()
	variable = frame.locator("tr", has=page.locator("th.var-name", has_text="order_id"))
	assert variable.locator("td.var-value").inner_text().strip() == "5"
	assert variable.locator("td.var-value").is_visible()
	# The hostile local variable is shown as text, not run.
	note = frame.locator("tr", has=page.locator("th.var-name", has_text="customer_note"))
	assert "<script>" in note.inner_text()
	assert page.evaluate("document.querySelectorAll('main script, main img').length") == 0


def test_new_event_appears_live(page, collector_with_data):
	page.goto(collector_with_data.url + "/")
	page.locator("#live-status.on").wait_for()  # connected to /stream
	page.evaluate("window.notReloaded = true")
	assert page.locator("tr.issue", has_text="live arrival").count() == 0
	send(collector_with_data.dsn, "live arrival")
	page.locator("tr.issue", has_text="live arrival").wait_for()
	assert page.evaluate("window.notReloaded") is True  # updated in place, not by a reload
	assert page.locator("tr.issue").count() == 4


def test_filter_bar(page, collector_with_data):
	page.goto(collector_with_data.url + "/")
	page.select_option("select[name=level]", "warning")
	page.fill("input[name=since]", "15m")
	page.click("form.filters button[type=submit]")
	page.wait_for_url("**/?*level=warning*")
	assert page.locator("tr.issue").count() == 1
	assert "payment provider slow" in page.locator("tr.issue").inner_text()
	page.fill("input[name=since]", "yesterday")
	page.fill("input[name=tag]", "tenant:acme")
	page.select_option("select[name=level]", "")
	page.click("form.filters button[type=submit]")
	page.wait_for_url("**/?*since=yesterday*")
	assert "since:" in page.locator("form.filters p.error").inner_text()
	page.fill("input[name=since]", "")
	page.click("form.filters button[type=submit]")
	page.wait_for_url(lambda url: "tag=tenant" in url and "yesterday" not in url)
	assert page.locator("tr.issue").count() == 2  # the KeyError and the message carry the tag


def test_trace_logs_checkins_and_clear(page, collector_with_data):
	page.goto(collector_with_data.url + "/traces")
	page.locator("tr.trace a.title", has_text="import orders").click()
	page.wait_for_url("**/traces/*")
	assert page.locator(".span-row").count() == 4
	page.goto(collector_with_data.url + "/logs")
	page.fill("input[name=q]", "imported")
	page.click("form.filters button[type=submit]")
	page.wait_for_url("**/logs?*q=imported*")
	assert page.locator("table.logs > tbody > tr").count() == 1
	page.goto(collector_with_data.url + "/checkins")
	assert page.locator("tr.checkin", has_text="nightly-import").count() == 2
	page.goto(collector_with_data.url + "/")
	page.once("dialog", lambda dialog: dialog.accept())
	page.click("#clear")
	page.locator("p.empty").wait_for()
	assert collector_with_data.Collector.Store.count() == 0
