"""Config keys that moved, read under their old names until version 0.2 with a one-line notice.

seq-JEPA's own settings moved from `model.*` to its section `seq_jepa.*`; the baselines' shared `method.*`
section became one section per method (`simclr.temperature`, `vicreg.inv_coeff`, ...), so an old `method.KEY`
goes to the chosen method's section; the test-only switches moved to `debug.*`. A config file, an override, a
sweep file and a stored checkpoint's config are all read through here.
"""

from __future__ import annotations

import sys

from trainer.errors import ConfigError
from trainer.methods.catalog import CATALOG, DEFAULT_METHOD

MOVED: dict[tuple[str, str], tuple[str, str]] = {
    # seq-JEPA's own settings (the default method's section) were `model.*` keys
    **{("model", key): (DEFAULT_METHOD, key) for key in CATALOG[DEFAULT_METHOD].setting_names()},
    ("faults", "exit_at_step"): ("debug", "exit_at_step"),
    ("faults", "exit_rank"): ("debug", "exit_rank"),
    ("train", "sample_log"): ("debug", "sample_log"),
}
OLD_NAMES = {".".join(new): ".".join(old) for old, new in MOVED.items()}  # new dotted key -> its old name
BASELINES_SECTION = "method"  # the old section every baseline read its settings from
REMOVED_IN = "0.2"

_noticed: set[str] = set()


def notice(old: str, new: str) -> None:
    """Once per process and key: say that `old` is now `new`."""
    if old not in _noticed:
        _noticed.add(old)
        print(f"notice: config key '{old}' is now '{new}'; the old name is read until version {REMOVED_IN}",
              file=sys.stderr)


def upgrade_path(path: list[str]) -> list[str]:
    """An override's key path under its current name (`method.*` is resolved later, once the method is known)."""
    if len(path) == 2 and tuple(path) in MOVED:
        new = list(MOVED[tuple(path)])
        notice(".".join(path), ".".join(new))
        return new
    return path


def upgrade_tree(tree: dict) -> dict:
    """A config tree (one file, or a stored config) with moved keys under their current names, in place. A key
    given under both names keeps the current name's value."""
    for (section, key), (new_section, new_key) in MOVED.items():
        old_section = tree.get(section)
        if isinstance(old_section, dict) and key in old_section:
            value = old_section.pop(key)
            notice(f"{section}.{key}", f"{new_section}.{new_key}")
            target = tree.setdefault(new_section, {})
            if isinstance(target, dict):
                target.setdefault(new_key, value)
            if not old_section:
                del tree[section]
    return tree


def resolve_baselines_section(tree: dict, override_paths: list[list[str]]) -> None:
    """The old shared `method:` section into the chosen method's section, in place, once all overrides are applied.

    A key the chosen method does not read was ignored before; in a file it still is (with a notice), as an
    override it is an error, as any override of another method's setting.
    """
    old = tree.pop(BASELINES_SECTION, None)
    if old is None:
        return
    if not isinstance(old, dict):
        raise ConfigError(f"'{BASELINES_SECTION}' must be a mapping of keys, got {old!r}")
    method = (tree.get("model") or {}).get("method", DEFAULT_METHOD)
    entry = CATALOG.get(method)
    readable = entry.setting_names() if entry is not None else ()
    overridden = {path[1] for path in override_paths if len(path) == 2 and path[0] == BASELINES_SECTION}
    section = tree.setdefault(method, {})
    for key, value in old.items():
        if key in readable:
            notice(f"{BASELINES_SECTION}.{key}", f"{method}.{key}")
            if isinstance(section, dict):
                section.setdefault(key, value)
        elif key in overridden:
            raise ConfigError(f"{BASELINES_SECTION}.{key} is not a setting of model.method={method} (its settings: "
                              f"{', '.join(readable) or 'none'}); drop it or choose a method that reads it")
        else:
            notice(f"{BASELINES_SECTION}.{key}", f"<method>.{key} (ignored: model.method={method} does not read it)")
    if not section:
        tree.pop(method)
    for path in override_paths:  # the overrides' key paths under their current names, for the owner check
        if len(path) == 2 and path[0] == BASELINES_SECTION:
            path[0] = method
