"""set_tag / set_tags: validation as the documentation page says, and what "the current scope" is."""

import asyncio
import logging
import threading

import pytest

from asab_sentry.tags import InvalidTag, validate_tag


@pytest.mark.parametrize(
	"key,value,expected",
	[
		("method", "my_function", ("method", "my_function")),
		("a" * 32, "v", ("a" * 32, "v")),
		("k.e:y-_9", "x" * 200, ("k.e:y-_9", "x" * 200)),
		("retries", 3, ("retries", "3")),
		("ratio", 0.5, ("ratio", "0.5")),
		("enabled", True, ("enabled", "True")),
	],
)
def test_valid_tags(key, value, expected):
	assert validate_tag(key, value) == expected


@pytest.mark.parametrize(
	"key,value,reason",
	[
		("", "v", "1 to 32 characters"),
		("a" * 33, "v", "1 to 32 characters long, it has 33"),
		("bad key", "v", "may contain only"),
		("slash/key", "v", "may contain only"),
		("k", "x" * 201, "at most 200 characters long, it has 201"),
		("k", "two\nlines", "newline"),
		("k", "", "must not be empty"),
		("k", None, "must be str, int, float or bool"),
		(7, "v", "key must be a string"),
	],
)
def test_invalid_tags(key, value, reason):
	with pytest.raises(InvalidTag) as info:
		validate_tag(key, value)
	assert reason in str(info.value)
	assert repr(key) in str(info.value)


def test_set_tag_on_events(sentry_capture):
	svc = sentry_capture.application().get_service("asab.SentryService")
	svc.set_tag("method", "my_function")
	svc.set_tags({"foo": "bar", "fooz": "buzz", "count": 3})
	svc.capture_message("tagged")
	tags = sentry_capture.find(message="tagged")["tags"]
	assert tags["method"] == "my_function" and tags["foo"] == "bar" and tags["fooz"] == "buzz" and tags["count"] == "3"


def test_invalid_tag_is_not_set_and_logged_once(sentry_capture, caplog):
	svc = sentry_capture.application().get_service("asab.SentryService")
	with caplog.at_level(logging.ERROR, logger="asab_sentry.service"):
		svc.set_tag("a" * 40, "v")
	records = [r for r in caplog.records if r.name == "asab_sentry.service"]
	assert len(records) == 1
	assert records[0].getMessage() == "Tag '{}' not set: the key must be 1 to 32 characters long, it has 40".format(
		"a" * 40
	)
	svc.capture_message("after invalid")
	assert "a" * 40 not in sentry_capture.find(message="after invalid")["tags"]


def test_set_tags_sets_valid_and_reports_each_invalid(sentry_capture, caplog):
	svc = sentry_capture.application().get_service("asab.SentryService")
	with caplog.at_level(logging.ERROR, logger="asab_sentry.service"):
		svc.set_tags({"good": "1", "bad key": "2", "also_good": "3", "newline": "a\nb"})
	messages = [r.getMessage() for r in caplog.records if r.name == "asab_sentry.service"]
	assert len(messages) == 2
	assert messages[0].startswith("Tag 'bad key' not set") and messages[1].startswith("Tag 'newline' not set")
	svc.capture_message("partial")
	tags = sentry_capture.find(message="partial")["tags"]
	assert tags["good"] == "1" and tags["also_good"] == "3"
	assert "bad key" not in tags and "newline" not in tags


def test_set_tags_with_a_non_mapping_never_raises(sentry_capture, caplog):
	svc = sentry_capture.application().get_service("asab.SentryService")
	svc.set_tags(["not", "a", "dict"])
	assert "set_tags() needs a dict" in caplog.text


def test_tags_of_concurrent_tasks_do_not_mix(sentry_capture):
	app = sentry_capture.application()
	svc = app.get_service("asab.SentryService")
	both_tagged = asyncio.Event()
	count = {"n": 0}

	async def handler(name):
		svc.set_tag("request", name)
		count["n"] += 1
		if count["n"] == 2:
			both_tagged.set()
		await both_tagged.wait()  # both tags are set before either captures
		svc.capture_message("from " + name)

	async def main():
		await asyncio.gather(app.Loop.create_task(handler("a")), app.Loop.create_task(handler("b")))
		svc.capture_message("from main")

	app.Loop.run_until_complete(app.Loop.create_task(main()))
	assert sentry_capture.find(message="from a")["tags"]["request"] == "a"
	assert sentry_capture.find(message="from b")["tags"]["request"] == "b"
	assert "request" not in sentry_capture.find(message="from main")["tags"]


def test_task_tags_are_inherited_by_tasks_it_starts(sentry_capture):
	app = sentry_capture.application()
	svc = app.get_service("asab.SentryService")

	async def child():
		svc.capture_message("child")

	async def parent():
		svc.set_tag("job", "nightly")
		await app.Loop.create_task(child())

	app.Loop.run_until_complete(app.Loop.create_task(parent()))
	assert sentry_capture.find(message="child")["tags"]["job"] == "nightly"


def test_application_level_tag_applies_to_later_events_everywhere(sentry_capture):
	app = sentry_capture.application()
	svc = app.get_service("asab.SentryService")

	async def early():
		await asyncio.sleep(0.01)
		svc.capture_message("from a task started before")

	task = app.Loop.create_task(early())
	svc.set_tag("tier", "gold")  # outside any task: the whole process
	app.Loop.run_until_complete(task)
	thread = threading.Thread(target=svc.capture_message, args=("from a thread",))
	thread.start()
	thread.join()
	assert sentry_capture.find(message="from a task started before")["tags"]["tier"] == "gold"
	assert sentry_capture.find(message="from a thread")["tags"]["tier"] == "gold"


def test_thread_tags_stay_in_the_thread(sentry_capture):
	svc = sentry_capture.application().get_service("asab.SentryService")

	def worker():
		svc.set_tag("worker", "w1")
		svc.capture_message("in thread")

	thread = threading.Thread(target=worker)
	thread.start()
	thread.join()
	svc.capture_message("in main")
	assert sentry_capture.find(message="in thread")["tags"]["worker"] == "w1"
	assert "worker" not in sentry_capture.find(message="in main")["tags"]


def test_set_context(sentry_capture):
	svc = sentry_capture.application().get_service("asab.SentryService")
	svc.set_context("import", {"file": "a.csv", "rows": 12})
	svc.set_context("broken", "not a dict")
	svc.capture_message("with context")
	contexts = sentry_capture.find(message="with context")["contexts"]
	assert contexts["import"] == {"file": "a.csv", "rows": 12}
	assert "broken" not in contexts


@pytest.mark.parametrize("key", ["release", "dist", "environment", "user", "filename", "function"])
def test_keys_that_sentry_removes_are_refused_with_a_line(sentry_capture, caplog, key):
	"""Relay removes these tags from every event: set_tag("environment", ...) was lost without a word."""
	import json

	from sentry_relay.processing import StoreNormalizer

	relay = StoreNormalizer(project_id=1)
	sent = {"event_id": "a" * 32, "message": "m", "tags": [[key, "staging"], ["kept", "yes"]]}
	normalized = relay.normalize_event(raw_event=json.dumps(sent).encode())
	assert [t[0] for t in normalized["tags"]] == ["kept"], "Relay keeps {!r} now: drop it from RESERVED_KEYS".format(
		key
	)

	svc = sentry_capture.application().get_service("asab.SentryService")
	with caplog.at_level(logging.ERROR, logger="asab_sentry"):
		svc.set_tag(key, "staging")
	svc.capture_message("reserved")
	assert key not in sentry_capture.find(message="reserved")["tags"]
	assert "Tag '{}' not set: Sentry removes tags named".format(key) in caplog.text
