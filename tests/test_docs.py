"""
Every fenced shell and Python example of README.md and docs/*.md runs as pasted, unless the document says why
not. The rules (README, "Development"):

- Every fence has a language. `sh`/`bash`/`shell` blocks run with bash (`set -eo pipefail`), `python` blocks
  with the virtualenv's Python, each as its own process; other languages (`ini`, `text`, ...) are not run.
- They run in document order in a scratch copy of the repository where the Quick start has been done (`.venv`
  is the virtualenv running the tests, the demo has filled `asab-sentry-demo.sqlite`), with a new user's
  environment: only HOME (empty), a default PATH (the virtualenv not activated), LANG.
- A marker on the line just before the fence changes that:
  `<!-- docs-test: illustrative: REASON -->` not run, and the reason says why (and what runs it instead);
  `<!-- docs-test: file PATH -->` the block is the repository file PATH, verbatim (the suite runs the file);
  `<!-- docs-test: pytest -->` a Python block that is a test module, run by pytest next to the example
  application (`from my_app import MyApplication` works).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
SHELL = {"sh", "bash", "shell"}
PYTHON = {"python", "py"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
TIMEOUT = 300


@dataclasses.dataclass
class Block:
	document: str
	line: int
	language: str
	code: str
	marker: str | None

	@property
	def id(self) -> str:
		return "{}:{}:{}".format(self.document, self.line, self.language or "?")


def parse(document: str) -> list[Block]:
	with open(os.path.join(REPO, document), encoding="utf-8") as f:
		lines = f.read().splitlines()
	blocks = []
	i = 0
	while i < len(lines):
		fence = FENCE.match(lines[i])
		if not fence:
			i += 1
			continue
		indent, ticks, language = fence.groups()
		previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
		marker = MARKER.match(previous)
		body = []
		j = i + 1
		while j < len(lines) and not lines[j].strip().startswith(ticks[0] * len(ticks)):
			body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
			j += 1
		blocks.append(
			Block(document, i + 1, language.lower(), "\n".join(body) + "\n", marker.group(1) if marker else None)
		)
		i = j + 1
	return blocks


BLOCKS = [block for document in DOCUMENTS for block in parse(document)]
CODE = [b for b in BLOCKS if b.language in SHELL | PYTHON]
COPIES = [b for b in CODE if (b.marker or "").startswith("file ")]
RUNNABLE = [b for b in CODE if not (b.marker or "").startswith(("file ", "illustrative:"))]


def test_documents_have_examples():
	assert "README.md" in DOCUMENTS and len(DOCUMENTS) > 1
	assert len(RUNNABLE) >= 6 and COPIES


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_every_fence_has_a_language_and_a_known_marker(block):
	assert block.language, "{}: a fence without a language (use `text` for what is not code)".format(block.id)
	if block.marker is None:
		return
	kind, _, argument = block.marker.partition(" ")
	if kind == "illustrative:":
		assert len(argument.strip()) >= 10, "{}: say why the example is illustrative".format(block.id)
	elif kind == "file":
		assert os.path.isfile(os.path.join(REPO, argument.strip())), block.id
	else:
		assert block.marker == "pytest" and block.language in PYTHON, "{}: unknown marker {!r}".format(
			block.id, block.marker
		)


def _ignore(directory, names):
	return {n for n in names if n in (".git", "__pycache__", ".e2e-cache", "dist", "build") or n.startswith(".venv")}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
	"""A copy of the repository after the Quick start: `.venv` (the running virtualenv) and the demo's storage."""
	if os.environ.get("ASAB_SENTRY_DOCS_TEST"):
		pytest.fail("a documentation example runs the test suite itself: mark it illustrative (CI runs it)")
	root = tmp_path_factory.mktemp("docs") / "asab-sentry"
	shutil.copytree(REPO, root, ignore=_ignore, symlinks=True)
	for stale in glob.glob(str(root / "*.sqlite*")):
		os.remove(stale)
	os.symlink(sys.prefix, root / ".venv")
	home = tmp_path_factory.mktemp("home")
	env = {"HOME": str(home), "PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "ASAB_SENTRY_DOCS_TEST": "1"}
	demo = subprocess.run(
		[str(root / ".venv" / "bin" / "asab-sentry"), "demo"],
		cwd=root,
		env=env,
		capture_output=True,
		text=True,
		timeout=TIMEOUT,
	)
	assert demo.returncode == 0, demo.stdout + demo.stderr
	return root, env


def _run(command, block, root, env):
	out = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT)
	assert out.returncode == 0, "{} failed (exit {}):\n{}\n--- stdout\n{}\n--- stderr\n{}".format(
		block.id, out.returncode, block.code, out.stdout[-3000:], out.stderr[-3000:]
	)
	return out


@pytest.mark.parametrize("block", COPIES, ids=lambda b: b.id)
def test_example_is_the_file_it_names(block):
	path = block.marker[len("file ") :].strip()
	with open(os.path.join(REPO, path), encoding="utf-8") as f:
		assert block.code.strip() == f.read().strip(), "{} differs from {}".format(block.id, path)


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_example_runs_as_pasted(block, scratch):
	# `.venv` here is the virtualenv running the tests: recreating it or installing into it would break the run.
	assert not re.search(r"-m venv \.venv\b|\.venv/bin/pip\b", block.code), (
		"{}: (re)creates or installs into .venv: mark it illustrative (CI runs the Quick start)".format(block.id)
	)
	root, env = scratch
	marker = block.marker or ""
	name = "docs_{}_{}".format(re.sub(r"\W", "_", block.document), block.line)
	if block.language in SHELL:
		_run(["bash", "-c", "set -eo pipefail\n" + block.code], block, root, env)
	elif marker == "pytest":
		path = root / "examples" / "test_{}.py".format(name)
		path.write_text(block.code)
		out = _run([str(root / ".venv" / "bin" / "python"), "-m", "pytest", "-q", str(path)], block, root, env)
		assert re.search(r"\b\d+ passed\b", out.stdout), out.stdout
	else:
		path = root / "{}.py".format(name)
		path.write_text(block.code)
		_run([str(root / ".venv" / "bin" / "python"), str(path)], block, root, env)
