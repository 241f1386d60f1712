"""
Who is reporting: the container manifest, the release, the server name and the identity tags
(``appclass``, ``node_id``, ``service_id``, ``instance_id``, ``site_id``) that every event carries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import typing

from .settings import repair_text, valid_release

L = logging.getLogger(__name__)

#: Where ASAB looks for the manifest when ``[general] manifest`` is not set, in this order.
MANIFEST_LOCATIONS = ("/app/MANIFEST.json", "/MANIFEST.json", "MANIFEST.json")

#: Environment variables that identify the deployment, and the tag each becomes.
IDENTITY_VARIABLES = {
	"NODE_ID": "node_id",
	"SERVICE_ID": "service_id",
	"INSTANCE_ID": "instance_id",
	"SITE_ID": "site_id",
}

_MAX_TAG_VALUE = 200


@dataclasses.dataclass(frozen=True)
class Identity:
	"""The identity of the running service, attached to every event and transaction."""

	app_class: str
	release: str | None
	server_name: str | None
	tags: dict[str, str]
	manifest: dict[str, typing.Any]
	manifest_path: str | None
	#: Environment variables whose value was not valid text (lone surrogates) and was repaired.
	repaired_variables: tuple[str, ...] = ()


def find_manifest(configured: str | None) -> str | None:
	"""Return the manifest path: the configured one, else the first of `MANIFEST_LOCATIONS` that exists."""
	if configured:
		return configured
	for path in MANIFEST_LOCATIONS:
		if os.path.isfile(path):
			return path
	return None


def load_manifest(path: str | None) -> dict[str, typing.Any]:
	"""
	Read the manifest. A missing manifest is normal (empty dict); an unreadable or invalid one
	is reported by one warning and start-up continues.
	"""
	if path is None:
		return {}
	try:
		with open(path, encoding="utf-8") as f:
			manifest = json.load(f)
	except FileNotFoundError:
		if path not in MANIFEST_LOCATIONS:
			L.warning(
				"Manifest {!r} configured in [general] manifest does not exist; continuing without it.".format(path)
			)
		return {}
	except (OSError, ValueError) as e:
		L.warning("Manifest {!r} cannot be used ({}); continuing without it.".format(path, e))
		return {}
	if not isinstance(manifest, dict):
		L.warning("Manifest {!r} is not a JSON object; continuing without it.".format(path))
		return {}
	return manifest


def build_identity(
	app_class: str,
	configured_release: str | None,
	configured_server_name: str | None,
	host_name: str | None,
	manifest_path: str | None,
	environ: typing.Mapping[str, str],
) -> Identity:
	"""
	Combine configuration, manifest and environment into an `Identity`.

	The release is the configured one (``[sentry] release`` or SENTRY_RELEASE), else
	``<AppClass>@<manifest version>`` when the manifest has a version, else none.
	"""
	manifest = load_manifest(manifest_path)
	release = configured_release
	version = manifest.get("version")
	if isinstance(version, (int, float)) and not isinstance(version, bool):
		version = str(version)  # "version": 2, a JSON number, gave no release at all
	elif version is not None and not isinstance(version, str) and release is None:
		L.warning("Manifest version {!r} is not text; no release from it.".format(version))
	if release is None and isinstance(version, str) and version.strip():
		release = "{}@{}".format(app_class, version.strip())
		if not valid_release(release):
			fixed = re.sub(r"[/\s]", "-", release)[:200]
			L.warning("Manifest version {!r} does not make a valid Sentry release; using {!r}.".format(version, fixed))
			release = fixed

	repaired = []
	tags = {"appclass": app_class}
	for variable, tag in IDENTITY_VARIABLES.items():
		value = environ.get(variable, "").strip()
		if value:
			fixed = repair_text(value)
			if fixed != value:
				repaired.append(variable)
			tags[tag] = fixed.replace("\n", " ")[:_MAX_TAG_VALUE]
	server_name = configured_server_name or host_name or None
	if server_name is not None and repair_text(server_name) != server_name:
		server_name = repair_text(server_name)
		repaired.append("ASAB_HOSTNAME (host name)")

	return Identity(
		app_class=app_class,
		release=release,
		server_name=server_name,
		tags=tags,
		manifest=manifest,
		manifest_path=manifest_path if manifest else None,
		repaired_variables=tuple(repaired),
	)
