"""What a published package must hold: the sdist and the wheel as `python -m build` makes them, their metadata,
and a README whose links work on a package index."""

import email.parser
import os
import re
import subprocess
import sys
import tarfile
import zipfile

import pytest

import asab_sentry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = re.compile(
	r"(^|/)(tests/|__pycache__/|\.pytest_cache/|\.ruff_cache/|\.mypy_cache/|\.venv|\.e2e-cache/)|\.pyc$|\.sqlite"
)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
	"""The sdist, and the wheel built from it (build's default), without build isolation (no network)."""
	out = tmp_path_factory.mktemp("dist")
	built = subprocess.run(
		[sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), REPO],
		capture_output=True,
		text=True,
		timeout=300,
	)
	assert built.returncode == 0, built.stdout + built.stderr
	(sdist,) = out.glob("*.tar.gz")
	(wheel,) = out.glob("*.whl")
	with tarfile.open(sdist) as tar:
		prefix = "asab_sentry-{}/".format(asab_sentry.__version__)
		sdist_files = {name[len(prefix) :]: tar for name in tar.getnames() if name.startswith(prefix)}
		sdist_license = tar.extractfile(prefix + "LICENSE").read().decode()
	with zipfile.ZipFile(wheel) as whl:
		wheel_files = set(whl.namelist())
		dist_info = "asab_sentry-{}.dist-info/".format(asab_sentry.__version__)
		metadata = email.parser.Parser().parsestr(whl.read(dist_info + "METADATA").decode())
		wheel_license = whl.read(dist_info + "licenses/LICENSE").decode()
	return {
		"sdist": set(sdist_files),
		"wheel": wheel_files,
		"metadata": metadata,
		"licenses": (sdist_license, wheel_license),
	}


def test_license_in_the_repository_sdist_and_wheel(artefacts):
	with open(os.path.join(REPO, "LICENSE")) as f:
		text = f.read()
	assert text.startswith("BSD 3-Clause License")
	assert "Neither the name of the copyright holder" in text
	assert artefacts["licenses"] == (text, text)
	assert artefacts["metadata"]["License-Expression"] == "BSD-3-Clause"


def test_wheel_contents(artefacts):
	files = artefacts["wheel"]
	assert "asab_sentry/py.typed" in files
	assert "asab_sentry/examples/my_app.py" in files, "the demo runs the example application"
	assert "asab_sentry/collector/app.py" in files
	# The collector's web UI: its templates and static files are package data.
	assert {"asab_sentry/collector/templates/base.html", "asab_sentry/collector/static/ui.js"} <= files
	leaked = sorted(f for f in files if FORBIDDEN.search(f))
	assert not leaked


def test_sdist_contents(artefacts):
	files = artefacts["sdist"]
	for needed in (
		"LICENSE",
		"README.md",
		"CHANGELOG.md",
		"pyproject.toml",
		"src/asab_sentry/py.typed",
		"examples/my_app.py",
		"examples/my_app.conf",
		"docs/testing.md",
	):
		assert needed in files
	leaked = sorted(f for f in files if FORBIDDEN.search(f))
	assert not leaked


def test_metadata(artefacts):
	metadata = artefacts["metadata"]
	classifiers = metadata.get_all("Classifier")
	for wanted in (
		"Framework :: AsyncIO",
		"Framework :: Pytest",
		"Typing :: Typed",
		"Topic :: System :: Monitoring",
		"Programming Language :: Python :: 3.10",
		"Programming Language :: Python :: 3.11",
		"Programming Language :: Python :: 3.12",
		"Programming Language :: Python :: 3.13",
	):
		assert wanted in classifiers
	assert any(c.startswith("Development Status :: ") for c in classifiers)
	# PEP 639: with a License-Expression, "License ::" classifiers are deprecated (setuptools refuses both).
	assert not any(c.startswith("License ::") for c in classifiers)
	assert metadata["Requires-Python"] == ">=3.10"
	extras = metadata.get_all("Provides-Extra")
	assert {"collector", "test", "dev"} <= set(extras)
	requires = metadata.get_all("Requires-Dist")
	assert not [r for r in requires if r.startswith("ruff") and "extra == 'test'" in r], "lint tools are in `dev`"
	assert [r for r in requires if r.startswith("ruff") and "extra == 'dev'" in r]
	assert metadata["Description-Content-Type"] == "text/markdown"


def test_readme_links_work_on_a_package_index():
	"""A package index renders the README away from the repository: no relative links, no anchors."""
	with open(os.path.join(REPO, "README.md")) as f:
		text = f.read()
	links = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"^\[[^\]]+\]:\s*(\S+)", text, re.M)
	assert links
	relative = [link for link in links if not link.startswith(("https://", "http://"))]
	assert not relative
