"""The plugin's top-level packages (``envs``, ``policies``, ``geometry``, ``vla``) next to a user's
own folder of the same name: importing the plugin from that folder stops with an error naming
the folder; a script kept elsewhere (as LeRobot's console commands are) imports it unharmed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

IMPORT = "import lerobot_policy_geovla, policies; print(policies.__file__)"


def _python(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_users_policies_folder_is_named_not_silently_used(tmp_path):
    project = tmp_path / "my_robot"
    (project / "policies").mkdir(parents=True)
    (project / "policies" / "__init__.py").write_text("MINE = True\n")

    shadowed = _python(project, "-c", IMPORT)
    assert shadowed.returncode != 0
    assert "the package 'policies' resolves to" in shadowed.stderr
    assert str(project / "policies" / "__init__.py") in shadowed.stderr

    elsewhere = tmp_path / "tools"
    elsewhere.mkdir()
    (elsewhere / "run.py").write_text(IMPORT + "\n")
    unharmed = _python(project, str(elsewhere / "run.py"))
    assert unharmed.returncode == 0, unharmed.stderr[-2000:]
    assert Path(unharmed.stdout.strip()) == Path(__file__).resolve().parents[1] / "policies" / "__init__.py"
