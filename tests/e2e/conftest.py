"""The Bugsink server for the end-to-end suite: started once per session, stopped at its end."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from bugsink import BugsinkServer, BugsinkUnavailable  # noqa: E402


def pytest_collection_modifyitems(items):
	for item in items:
		if "/e2e/" in str(item.fspath):
			item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def bugsink(tmp_path_factory):
	server = BugsinkServer(tmp_path_factory.mktemp("bugsink"))
	try:
		server.start()
	except BugsinkUnavailable as e:
		pytest.skip("Bugsink is not available here: {}".format(e))
	try:
		yield server
	finally:
		server.stop()
