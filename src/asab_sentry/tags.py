"""
Tag validation, by Sentry's rules: a key is 1–32 characters of ``a-zA-Z0-9_.:-``; a value is 1–200
characters, not only whitespace (Relay drops it) and has no newline; keys Relay removes from every event
(`RESERVED_KEYS`: ``release``, ``environment``, ...) are refused. ``int``, ``float`` and ``bool`` values are
converted to ``str``; lone surrogates in a value are replaced with U+FFFD. Messages name the key safely (at
most 60 characters of its ``repr``), whatever it is.
"""

from __future__ import annotations

import re

from . import notices
from .settings import _WHITESPACE

MAX_KEY_LENGTH = 32
MAX_VALUE_LENGTH = 200

_KEY = re.compile(r"^[a-zA-Z0-9_.:\-]+$")

#: Keys Sentry (Relay) removes from every event's tags, silently: they name the event's own fields.
RESERVED_KEYS = frozenset({"release", "dist", "environment", "user", "filename", "function"})


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
	shown = notices.safe_repr(key, 60)
	if not isinstance(key, str):
		raise InvalidTag("Tag {} not set: the key must be a string, not {}".format(shown, type(key).__name__))
	key = str.__str__(key)
	if not (0 < len(key) <= MAX_KEY_LENGTH):
		raise InvalidTag(
			"Tag {} not set: the key must be 1 to {} characters long, it has {}".format(shown, MAX_KEY_LENGTH, len(key))
		)
	if _KEY.fullmatch(key) is None:
		raise InvalidTag(
			"Tag {} not set: the key may contain only letters, digits, '_', '.', ':' and '-'".format(shown)
		)
	if key in RESERVED_KEYS:
		raise InvalidTag(
			"Tag {} not set: Sentry removes tags named release, dist, environment, user, filename or function "
			"(the event's own fields: [sentry] release and environment set those)".format(shown)
		)

	if isinstance(value, bool):
		value = str(value)
	elif isinstance(value, int):
		if value.bit_length() > 700:  # more than 200 digits; str() of a huge int may even raise
			raise InvalidTag(
				"Tag {} not set: the value must be at most {} characters long, it has more".format(
					shown, MAX_VALUE_LENGTH
				)
			)
		value = int.__repr__(value)
	elif isinstance(value, float):
		value = float.__repr__(value)
	elif isinstance(value, str):
		value = notices.scrub.sanitize_text(str.__str__(value))
	else:
		raise InvalidTag(
			"Tag {} not set: the value must be str, int, float or bool, not {}".format(shown, type(value).__name__)
		)
	if value.strip(_WHITESPACE) == "":
		raise InvalidTag("Tag {} not set: the value must not be empty or only whitespace".format(shown))
	if len(value) > MAX_VALUE_LENGTH:
		raise InvalidTag(
			"Tag {} not set: the value must be at most {} characters long, it has {}".format(
				shown, MAX_VALUE_LENGTH, len(value)
			)
		)
	if "\n" in value:
		raise InvalidTag("Tag {} not set: the value must not contain a newline".format(shown))
	return key, value
