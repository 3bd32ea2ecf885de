#!/usr/bin/env python3
"""Write debian/requirements.lock: the wheels of pyproject.toml's dependencies for Debian 12's Python.

    python3 debian/make-lock.py        (needs PyPI; run when the dependencies change)
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
env["PIP_CONFIG_FILE"] = os.devnull
with tempfile.TemporaryDirectory() as wheels:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version",
                    "3.11.2", "-d", wheels, *requires, "setuptools>=70.1", "wheel"], check=True, env=env)
    lines = ["# Hash-pinned lock of the virtual environment shipped in the Debian package (Debian 12: CPython "
             "3.11.2, x86_64).", "# Written by debian/make-lock.py from pyproject.toml's dependencies; "
             "'make wheelhouse' fetches these, the build installs only them."]
    for name in sorted(os.listdir(wheels)):
        project, version = name.split("-")[:2]
        digest = hashlib.sha256(Path(wheels, name).read_bytes()).hexdigest()
        lines.append(f"{project.replace('_', '-').lower()}=={version} --hash=sha256:{digest}")
(ROOT / "debian" / "requirements.lock").write_text("\n".join(lines) + "\n")
print(f"debian/requirements.lock: {len(lines) - 2} wheels")
