"""Secrets never leave the process: what goes to MLflow (params, artifacts) and to the console is redacted.

Two kinds of secret can sit in a config: a value under a secret-looking key (`...password`,
`...token`, `...secret_access_key`) and credentials inside a URL (`http://user:pass@mlflow:5000`,
an S3 endpoint with a key in it). AWS credentials themselves come from boto3's chain, never the config.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
SECRET_WORDS = {"password", "passwd", "secret", "token", "credential", "credentials"}
SECRET_SUFFIX = re.compile(r"(api|access|private)_?key$")
URL_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)


def redact_text(text: str) -> str:
    """Any `scheme://user:pass@host` in the text becomes `scheme://***@host`."""
    return URL_USERINFO.sub(rf"\g<scheme>{MASK}@", text)


def is_secret_key(key: str) -> bool:
    """`db.password`, `aws_secret_access_key`, `api_key`: yes; `tokenizer`, `keep_checkpoints`: no."""
    name = key.rsplit(".", 1)[-1].lower()
    return bool(SECRET_WORDS & set(re.split(r"[_\-]", name))) or SECRET_SUFFIX.search(name) is not None


def redact_value(key: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if is_secret_key(key):
        return MASK
    return redact_text(value) if isinstance(value, str) else value


def redact_tree(tree: Any, prefix: str = "") -> Any:
    """A config tree (dicts, lists, scalars) with every secret masked; the input is left as it was."""
    if isinstance(tree, dict):
        return {k: redact_tree(v, f"{prefix}{k}.") if isinstance(v, (dict, list)) else redact_value(f"{prefix}{k}", v)
                for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact_tree(v, prefix) if isinstance(v, (dict, list)) else redact_value(prefix.rstrip("."), v)
                for v in tree]
    return redact_value(prefix.rstrip("."), tree)
