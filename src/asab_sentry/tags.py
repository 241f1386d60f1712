"""
Tag validation, by Sentry's rules: a key is 1–32 characters of ``a-zA-Z0-9_.:-``; a value is 1–200
characters and has no newline (Relay rejects empty values). ``int``, ``float`` and ``bool`` values are converted to ``str``.
"""

from __future__ import annotations

import re

MAX_KEY_LENGTH = 32
MAX_VALUE_LENGTH = 200

_KEY = re.compile(r"^[a-zA-Z0-9_.:\-]+$")


class InvalidTag(ValueError):
	"""Why a tag was rejected; the message names the key and the reason."""


def validate_tag(key: object, value: object) -> tuple[str, str]:
	"""
	Return ``(key, value)`` ready for Sentry, or raise `InvalidTag` with a readable reason.

	>>> validate_tag("retries", 3)
	('retries', '3')
	>>> validate_tag("bad key", "x")
	Traceback (most recent call last):
	...
	asab_sentry.tags.InvalidTag: Tag 'bad key' not set: the key may contain only letters, digits, '_', '.', ':' and '-'
	"""
	if not isinstance(key, str):
		raise InvalidTag("Tag {!r} not set: the key must be a string, not {}".format(key, type(key).__name__))
	if not (0 < len(key) <= MAX_KEY_LENGTH):
		raise InvalidTag(
			"Tag {!r} not set: the key must be 1 to {} characters long, it has {}".format(key, MAX_KEY_LENGTH, len(key))
		)
	if _KEY.match(key) is None:
		raise InvalidTag(
			"Tag {!r} not set: the key may contain only letters, digits, '_', '.', ':' and '-'".format(key)
		)

	if isinstance(value, (bool, int, float)):
		value = str(value)
	elif not isinstance(value, str):
		raise InvalidTag(
			"Tag {!r} not set: the value must be str, int, float or bool, not {}".format(key, type(value).__name__)
		)
	if value == "":
		raise InvalidTag("Tag {!r} not set: the value must not be empty".format(key))
	if len(value) > MAX_VALUE_LENGTH:
		raise InvalidTag(
			"Tag {!r} not set: the value must be at most {} characters long, it has {}".format(
				key, MAX_VALUE_LENGTH, len(value)
			)
		)
	if "\n" in value:
		raise InvalidTag("Tag {!r} not set: the value must not contain a newline".format(key))
	return key, value
