"""
Shared fixtures. Every test runs with clean global state (sentry-sdk, asab's Application singleton and
Config, the root logger, environment variables), fails when sentry-sdk swallowed an internal error, and
has each event and transaction it produced checked by Relay's normalizer.
"""

from __future__ import annotations

import logging
import os
import sys

import pytest

from asab_sentry import _sdk, testing
from asab_sentry.collector.server import CollectorSettings, start_in_thread
from asab_sentry.collector.store import Store

sys.path.insert(0, os.path.dirname(__file__))

from referee import Referee  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def clean_state(request):
	"""Global state restored after each test; internal sentry-sdk errors and Relay-invalid items fail it."""
	state = testing._GlobalState.save()
	for name in testing.ENVIRONMENT_VARIABLES:
		os.environ.pop(name, None)
	_sdk.reset()
	recorder = _sdk.InternalErrorRecorder()
	recorder.install()
	referee = Referee()
	remove_listener = testing.on_envelope(referee.check_sdk_envelope)
	request.node.referee = referee
	try:
		yield referee
	finally:
		remove_listener()
		recorder.uninstall()
		state.restore()
	problems = []
	if recorder.Records and not request.node.get_closest_marker("allow_internal_errors"):
		problems.append(
			"sentry-sdk swallowed internal errors:\n"
			+ "\n".join(logging.Formatter().format(r) for r in recorder.Records)
		)
	if referee.problems:
		problems.append("Relay's normalizer rejected:\n" + "\n".join(referee.problems))
	if problems:
		pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def referee(clean_state) -> Referee:
	return clean_state


@pytest.fixture
def collector(referee):
	"""A real collector on 127.0.0.1 (own thread); every envelope it accepts is checked by Relay."""
	running = start_in_thread(Store(":memory:"), CollectorSettings())
	running.Collector.Listeners.append(referee.check_collector_envelope)
	try:
		yield running
	finally:
		# Stop sentry-sdk before the server it sends to disappears.
		_sdk.reset()
		running.stop()


def pytest_configure(config):
	config.addinivalue_line("markers", "allow_internal_errors: the test provokes sentry-sdk internal errors on purpose")
