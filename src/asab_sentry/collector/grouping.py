"""
Which issue an error or message event belongs to: Sentry's grouping, reduced to the rules a developer can
predict (the issue's key is a hash of the components below):

1. the event's ``fingerprint`` when it has one (``{{ default }}`` in it stands for the components of rule 2
   or 3, as in Sentry);
2. else, for an exception, its type plus the innermost in-app frame of its stack trace: module (or file
   name when there is no module) and function; line numbers are left out so that an edit elsewhere in the
   file does not split the issue. The innermost frame of any kind is used when no frame is in-app;
3. else (also for a message whose exception only carries its stack: no type, or ``mechanism.synthetic``)
   the log message template (``logentry.message``, e.g. ``"order %s failed"``), or the formatted message
   when there is no template.

Input: an event as normalized by `normalize.Normalizer` (``exception.values``, ``logentry``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing

from .. import payload


@dataclasses.dataclass(frozen=True)
class Grouping:
	"""
	Attributes:
		Hash: the issue's key (40 hex characters).
		Components: what the key was made of (shown by the API as ``grouping``).
		Culprit: where it happened, ``"module in function"``, or "".
	"""

	Hash: str
	Components: tuple[str, ...]
	Culprit: str


def _innermost_frame(exception: dict) -> dict | None:
	stacktrace = exception.get("stacktrace")
	frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
	if not isinstance(frames, list):
		return None
	frames = [f for f in frames if isinstance(f, dict)]
	in_app = [f for f in frames if f.get("in_app") is True]
	chosen = in_app or frames
	return chosen[-1] if chosen else None  # Sentry's order: the innermost (most recent) frame is the last


def _text(value: typing.Any) -> str:
	return value if isinstance(value, str) else ("" if value is None else json.dumps(value, default=str))


def default_components(event: dict) -> tuple[tuple[str, ...], str]:
	"""The components of rules 2 and 3, and the culprit."""
	chain = payload.exceptions(event)
	if chain and not payload.is_synthetic(chain[-1], event):
		exception = chain[-1]
		frame = _innermost_frame(exception) or {}
		where = _text(frame.get("module") or frame.get("filename") or frame.get("abs_path"))
		function = _text(frame.get("function"))
		culprit = "{} in {}".format(where, function) if where and function else where or function
		return ("exception", _text(exception.get("type") or "Error"), where, function), culprit
	logentry = event.get("logentry")
	template = ""
	if isinstance(logentry, dict):
		template = _text(logentry.get("message") or logentry.get("formatted"))
	if not template:
		template = payload.message(event)
	return ("message", template), _text(event.get("culprit") or event.get("logger") or "")


def group(event: dict) -> Grouping:
	"""The issue ``event`` belongs to."""
	components, culprit = default_components(event)
	fingerprint = event.get("fingerprint")
	if isinstance(fingerprint, list) and fingerprint:
		parts: list[str] = []
		for part in fingerprint:
			text = _text(part)
			if text.replace(" ", "") == "{{default}}":
				parts.extend(components)
			else:
				parts.append(text)
		components = ("fingerprint", *parts)
	key = hashlib.sha1(json.dumps(components, ensure_ascii=False).encode("utf-8", "replace")).hexdigest()
	return Grouping(Hash=key, Components=tuple(components), Culprit=culprit)
