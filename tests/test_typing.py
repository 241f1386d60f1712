"""The public API is typed (py.typed): a user's module passes `mypy --strict`, and no `Any` leaks out of our API
(event payloads are JSON objects, `dict[str, Any]`, by design)."""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_MODULE = os.path.join(REPO, "tests", "typing", "user_app.py")
CONFIG = """
[mypy]
strict = True

[mypy-asab.*]
follow_untyped_imports = True
"""
# The only Any a user may see: JSON payloads, and the Coroutine type of every `async def`.
ALLOWED_ANY = re.compile(r"dict\[str, Any\]|typing\.Coroutine\[Any, Any, ")


def test_user_module_passes_strict_mypy_and_no_any_leaks(tmp_path):
	config = tmp_path / "mypy.ini"
	config.write_text(CONFIG)
	out = subprocess.run(
		[
			sys.executable,
			"-m",
			"mypy",
			"--config-file",
			str(config),
			"--cache-dir",
			str(tmp_path / "cache"),
			USER_MODULE,
		],
		capture_output=True,
		text=True,
		timeout=300,
		cwd=tmp_path,
	)
	report = out.stdout + out.stderr
	assert out.returncode == 0, report
	revealed = dict(re.findall(r"user_app\.py:(\d+): note: Revealed type is \"(.*)\"", report))
	with open(USER_MODULE) as f:
		expected_reveals = sum(line.strip().startswith("reveal_type(") for line in f)
	assert len(revealed) == expected_reveals, report
	leaks = {line: t for line, t in revealed.items() if "Any" in ALLOWED_ANY.sub("", t)}
	assert not leaks, report
	# The decorators keep the decorated function's signature.
	assert "def (x: int) -> int" in revealed.values()
	assert "def (x: int) -> typing.Coroutine[Any, Any, str]" in revealed.values()
