"""Where the project's files are: the repository root and the folders the infra tests read; `tomllib` to read
pyproject.toml with."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover: Python 3.10, where pytest itself installs the `tomli` backport
    import tomli as tomllib

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # tests/helpers/paths.py -> the repository root
DOCKER, INFRA = PROJECT_ROOT / "docker", PROJECT_ROOT / "infra"
KUBERAY = sorted((INFRA / "kuberay").glob("*.yaml"))

__all__ = ["DOCKER", "INFRA", "KUBERAY", "PROJECT_ROOT", "tomllib"]
