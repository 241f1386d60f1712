"""
A real Bugsink server (self-hosted, Sentry-compatible) for the end-to-end suite.

Installed from PyPI into its own virtualenv, cached between runs (``.e2e-cache/`` in the repository, or
``$ASAB_SENTRY_E2E_CACHE``); configured with SQLite under a temporary directory, eager task processing and
phone-home off; served by gunicorn on 127.0.0.1. `stop()` ends only the processes this module started.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

BUGSINK_REQUIREMENT = "bugsink>=2.6,<2.7"
REPO = pathlib.Path(__file__).resolve().parents[2]

SETUP_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from teams.models import Team, TeamMembership, TeamRole
from projects.models import Project, ProjectMembership, ProjectRole
from bsmain.models import AuthToken
User = get_user_model()
user = User.objects.create_superuser(username="e2e@example.org", email="e2e@example.org", password="e2e-password")
team = Team.objects.create(name="e2e")
TeamMembership.objects.create(team=team, user=user, role=TeamRole.ADMIN, accepted=True)
project = Project.objects.create(team=team, name="asab-sentry e2e", slug="asab-sentry-e2e")
ProjectMembership.objects.create(project=project, user=user, role=ProjectRole.ADMIN, accepted=True)
token = AuthToken.create_full_access()
print("E2E-SETUP " + json.dumps({"dsn": project.dsn, "project_id": project.id, "token": token.token}))
"""


class BugsinkUnavailable(Exception):
	"""Bugsink could not be installed or started here; the message says why."""


def cache_dir() -> pathlib.Path:
	return pathlib.Path(os.environ.get("ASAB_SENTRY_E2E_CACHE", REPO / ".e2e-cache"))


def ensure_installed() -> pathlib.Path:
	"""The bin/ directory of a virtualenv with Bugsink, created once and reused."""
	venv = cache_dir() / "bugsink-venv"
	bin_dir = venv / "bin"
	marker = venv / "installed.txt"
	if marker.exists() and marker.read_text().strip() == BUGSINK_REQUIREMENT and (bin_dir / "gunicorn").exists():
		return bin_dir
	try:
		if venv.exists():
			shutil.rmtree(venv)
		venv.parent.mkdir(parents=True, exist_ok=True)
	except OSError as e:
		raise BugsinkUnavailable("cannot prepare {}: {}".format(venv, e))
	steps = [
		[sys.executable, "-m", "venv", str(venv)],
		[str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", BUGSINK_REQUIREMENT],
	]
	for step in steps:
		out = subprocess.run(step, capture_output=True, text=True, timeout=600)
		if out.returncode != 0:
			lines = [ln for ln in (out.stderr or out.stdout).splitlines() if ln.strip()]
			raise BugsinkUnavailable("'{}' failed: {}".format(" ".join(step[2:4] + step[-1:]), " | ".join(lines[-2:])))
	marker.write_text(BUGSINK_REQUIREMENT)
	return bin_dir


def free_port() -> int:
	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


class BugsinkServer:
	def __init__(self, workdir: pathlib.Path):
		self.Workdir = workdir
		self.Port = free_port()
		self.Url = "http://127.0.0.1:{}".format(self.Port)
		self.Process: subprocess.Popen | None = None
		self.Dsn = ""
		self.ProjectId = 0
		self.Token = ""

	def _env(self) -> dict[str, str]:
		env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRY_", "DJANGO_", "PYTHON"))}
		env.update(DJANGO_SETTINGS_MODULE="bugsink_conf", PYTHONPATH=str(self.Workdir), HOME=str(self.Workdir))
		return env

	def _run(self, bin_dir: pathlib.Path, *args: str, timeout: float = 300) -> str:
		out = subprocess.run(
			[str(bin_dir / args[0]), *args[1:]],
			capture_output=True,
			text=True,
			timeout=timeout,
			env=self._env(),
			cwd=self.Workdir,
		)
		if out.returncode != 0:
			raise BugsinkUnavailable("{} failed: {}".format(" ".join(args[:3]), (out.stderr or out.stdout)[-1500:]))
		return out.stdout

	def start(self) -> BugsinkServer:
		bin_dir = ensure_installed()
		conf = self.Workdir / "bugsink_conf.py"
		self._run(
			bin_dir,
			"bugsink-create-conf",
			"--template=local",
			"--host=127.0.0.1",
			"--port={}".format(self.Port),
			"--output-file={}".format(conf),
		)
		data = self.Workdir / "data"
		(data / "wakeup").mkdir(parents=True)
		(data / "ingest").mkdir()
		with conf.open("a") as f:
			f.write(
				"\n# asab-sentry e2e overrides\n"
				"DATABASES['default']['NAME'] = {db!r}\n"
				"DATABASES['snappea']['NAME'] = {snappea!r}\n"
				"SNAPPEA = {{'TASK_ALWAYS_EAGER': True, 'NUM_WORKERS': 2, 'PID_FILE': None, 'WAKEUP_CALLS_DIR': {wakeup!r}}}\n"
				"BUGSINK['INGEST_STORE_BASE_DIR'] = {ingest!r}\n"
				"BUGSINK['PHONEHOME'] = False\n"
				"ALLOWED_HOSTS = ['127.0.0.1', 'localhost']\n".format(
					db=str(data / "db.sqlite3"),
					snappea=str(data / "snappea.sqlite3"),
					wakeup=str(data / "wakeup"),
					ingest=str(data / "ingest"),
				)
			)
		self._run(bin_dir, "bugsink-manage", "migrate", "snappea", "--database=snappea", "-v0")
		self._run(bin_dir, "bugsink-manage", "migrate", "-v0")
		output = self._run(bin_dir, "bugsink-manage", "shell", "-c", SETUP_SCRIPT)
		line = [ln for ln in output.splitlines() if ln.startswith("E2E-SETUP ")][-1]
		setup = json.loads(line[len("E2E-SETUP ") :])
		self.Dsn, self.ProjectId, self.Token = setup["dsn"], setup["project_id"], setup["token"]

		self.Log = (self.Workdir / "gunicorn.log").open("w")
		self.Process = subprocess.Popen(
			[
				str(bin_dir / "gunicorn"),
				"--bind",
				"127.0.0.1:{}".format(self.Port),
				"--workers",
				"2",
				"--no-control-socket",
				"bugsink.wsgi",
			],
			env=self._env(),
			cwd=self.Workdir,
			stdout=self.Log,
			stderr=subprocess.STDOUT,
		)
		deadline = time.time() + 60
		while time.time() < deadline:
			if self.Process.poll() is not None:
				raise BugsinkUnavailable("gunicorn exited: " + (self.Workdir / "gunicorn.log").read_text()[-1500:])
			try:
				with urllib.request.urlopen(self.Url + "/health/ready", timeout=2) as response:
					if response.status == 200:
						return self
			except OSError:
				time.sleep(0.2)
		self.stop()
		raise BugsinkUnavailable("Bugsink did not become ready within 60 s")

	def stop(self) -> None:
		if self.Process is not None and self.Process.poll() is None:
			self.Process.terminate()
			try:
				self.Process.wait(timeout=15)
			except subprocess.TimeoutExpired:
				self.Process.kill()
				self.Process.wait()
		self.Process = None

	# REST API

	def api(self, path: str) -> object:
		request = urllib.request.Request(self.Url + path, headers={"Authorization": "Bearer " + self.Token})
		with urllib.request.urlopen(request, timeout=10) as response:
			return json.loads(response.read())

	def issues(self) -> list[dict]:
		answer = self.api("/api/canonical/0/issues/?project={}".format(self.ProjectId))
		return answer["results"] if isinstance(answer, dict) and "results" in answer else answer  # type: ignore[return-value]
