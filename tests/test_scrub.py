"""scrub.py as functions: lone surrogates, secret keys (denylist, compounds, scrub_keys), requests, argv."""

import json

import pytest

from asab_sentry import scrub
from asab_sentry.scrub import FILTERED, Scrubber


@pytest.mark.parametrize(
	"key",
	[
		"password",
		"db_password",
		"DB_PASSWORD",
		"dbPassword",
		"passwd",
		"secret_key",
		"client-secret",
		"access_token",
		"api_token",
		"apiKey",
		"X-Api-Key",
		"api_key",
		"auth",
		"x_auth",
		"Authorization",
		"Proxy-Authorization",
		"cookie",
		"Set-Cookie",
		"session",
		"sessionid",
		"csrf",
		"X-CSRFToken",
		"private_key",
		"credentials",
		"mysql_pwd",
		"sentry_dsn",
	],
)
def test_secret_keys(key):
	assert Scrubber().is_secret(key)


@pytest.mark.parametrize("key", ["author", "name", "host", "user_id", "count", "passenger", "path", "status"])
def test_ordinary_keys(key):
	assert not Scrubber().is_secret(key)


def test_scrub_keys_adds_terms():
	s = Scrubber(["ssn", "Card-Number"])
	assert s.is_secret("customer_ssn") and s.is_secret("cardNumber") and s.is_secret("CARD_NUMBER")
	assert not Scrubber().is_secret("customer_ssn")


def test_recursive_and_unchanged_data_not_copied():
	s = Scrubber()
	data = {"config": {"db": [{"password": "p", "host": "h"}]}, "n": 1}
	out = s.scrub(data)
	assert out == {"config": {"db": [{"password": FILTERED, "host": "h"}]}, "n": 1}
	assert data["config"]["db"][0]["password"] == "p", "the input is not modified"
	clean = {"a": {"b": [1, "x"]}}
	assert s.scrub(clean) is clean


def test_a_secret_key_hides_a_whole_structure():
	assert Scrubber().scrub({"credentials": {"user": "u", "key": "k"}}) == {"credentials": FILTERED}


def test_query_url_argv_body():
	s = Scrubber()
	assert s.scrub_query("a=1&token=x&password=") == "a=1&token=[Filtered]&password=[Filtered]"
	assert s.scrub_query("a=%20&api%5Fkey=x") == "a=%20&api%5Fkey=[Filtered]", "names are decoded to match"
	assert s.scrub_query("a=1&b=2") == "a=1&b=2"
	assert s.scrub_url("postgres://app:hunter2@db/x") == "postgres://app:[Filtered]@db/x"
	assert s.scrub_argv(["x", "--db-password=s", "--api-key", "k", "--verbose", "-o", "out"]) == [
		"x",
		"--db-password=[Filtered]",
		"--api-key",
		FILTERED,
		"--verbose",
		"-o",
		"out",
	]
	assert json.loads(s.scrub_body('{"user": "u", "password": "p"}')) == {"user": "u", "password": FILTERED}
	assert s.scrub_body("user=u&password=p") == "user=u&password=[Filtered]"
	assert s.scrub_body("just text") == "just text"


def test_request_headers_cookies_query_body():
	request = {
		"url": "http://h/login",
		"method": "POST",
		"headers": {
			"Authorization": "Bearer S3CR3T",
			"Cookie": "session=S3CR3T",
			"X-Api-Key": "S3CR3T",
			"Accept": "*/*",
		},
		"cookies": {"session": "S3CR3T", "theme": "dark"},
		"query_string": "token=S3CR3T&page=2",
		"data": {"password": "S3CR3T", "user": "bob"},
		"env": {"REMOTE_ADDR": "127.0.0.1"},
	}
	out = scrub.scrub_request(request)
	assert "S3CR3T" not in json.dumps(out).replace("[Filtered]", "")
	assert out["headers"]["Accept"] == "*/*" and out["data"]["user"] == "bob" and "page=2" in out["query_string"]
	assert out["cookies"] == {"session": FILTERED, "theme": FILTERED}


def test_scrub_headers_uses_configured_terms():
	try:
		scrub.configure(["x-tenant-key"])
		assert scrub.scrub_headers({"X-Tenant-Key": "t", "Host": "h"}) == {"X-Tenant-Key": FILTERED, "Host": "h"}
	finally:
		scrub.configure()
	assert scrub.scrub_headers({"X-Tenant-Key": "t"}) == {"X-Tenant-Key": "t"}


def test_sanitize_text():
	assert scrub.sanitize_text("caf\udce9") == "caf\ufffd"
	assert scrub.sanitize_text("\ud83d\ude00") == "\U0001f600", "a valid pair becomes its character"
	assert scrub.sanitize_text("\ud800x\udfff") == "\ufffdx\ufffd"
	text = "plain ascii"
	assert scrub.sanitize_text(text) is text
	data = {"k\udcff": ["v\udcff", 1, None], "ok": "ok"}
	assert scrub.sanitize(data) == {"k\ufffd": ["v\ufffd", 1, None], "ok": "ok"}
	json.dumps(scrub.sanitize(data), ensure_ascii=False).encode("utf-8")


def test_deep_data_is_cut():
	deep: dict = {}
	current = deep
	for _ in range(200):
		current["n"] = {}
		current = current["n"]
	out = Scrubber().scrub(deep)
	depth = 0
	while isinstance(out, dict):
		out = out["n"]
		depth += 1
	assert out == "[too deep]" and depth <= scrub.MAX_DEPTH + 2


def test_sys_argv_scrubbed_in_events_follows_changes_of_argv():
	"""The scrubbed command line is remembered (every event carries the same), never reused for another one."""
	scrubber = Scrubber()
	first = scrubber.scrub_event({"extra": {"sys.argv": ["app.py", "--token", "t1"]}})
	again = scrubber.scrub_event({"extra": {"sys.argv": ["app.py", "--token", "t1"]}})
	other = scrubber.scrub_event({"extra": {"sys.argv": ["app.py", "--db-password=x", "-v"]}})
	odd = scrubber.scrub_event({"extra": {"sys.argv": ["app.py", 5, "--token", "t"]}})
	assert first["extra"]["sys.argv"] == again["extra"]["sys.argv"] == ["app.py", "--token", "[Filtered]"]
	assert first["extra"]["sys.argv"] is not again["extra"]["sys.argv"]  # each event its own list
	assert other["extra"]["sys.argv"] == ["app.py", "--db-password=[Filtered]", "-v"]
	assert odd["extra"]["sys.argv"] == ["app.py", 5, "--token", "[Filtered]"]
