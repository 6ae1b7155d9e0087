"""The action-conditioning contrast of a fidelity sweep: per setting, seq-JEPA with actions, without, and the
untrained encoder, side by side with their ratios (the paper's Table 1 rows "seq-JEPA" vs "w/o action cond.").

A setting is one value of every swept key but the variant; the variants are told apart by their tag (a sweep's
`variants`: `actions`, `no_actions`, `untrained`), or else by `seq_jepa.action_cond` (`model.action_cond` in runs
logged before version 0.2) and the untrained tag. The
claims checked (issue "fidelity on a laptop"): rotation R² from encoder pairs with actions at least twice the
no-action model's; z_AGG top-1 with actions at least the no-action model's, both above the floor, rising with
M_val; rotation R² of single-view z_AGGs (leakage) well below the encoder pair's.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from sweeps.runs import Run
from trainer import metric_names as names
from trainer.config.legacy import OLD_NAMES
from trainer.methods.catalog import SEQ_JEPA_FAMILY
from trainer.tracking import UNTRAINED_TAG, VARIANT_TAG

VARIANTS = ("actions", "no_actions", "untrained")
ACTION_COND = "seq_jepa.action_cond"
# What tells the variants apart (and a seed, averaged over): not part of a setting. The action conditioning under
# its old name too, for a caller that passes the keys of old runs as logged.
CONTRASTED_KEYS = (ACTION_COND, OLD_NAMES[ACTION_COND], "optim.lr", "train.epochs", "train.steps_per_epoch",
                   "train.seed")
ROTATION = names.per_group(names.EVAL_R2_ENC, "rotation")
LEAKAGE = names.per_group(names.EVAL_R2_AGG, "rotation")  # single-view z_AGGs should forget the rotation


def variant_of(run: Run) -> str | None:
    """actions, no_actions or untrained; None for a trained run of another method (a methods sweep's baselines)."""
    if run.tags.get(VARIANT_TAG) in VARIANTS:
        return run.tags[VARIANT_TAG]
    if run.tags.get(UNTRAINED_TAG) == "true":
        return "untrained"
    if run.entry is None or run.entry.family != SEQ_JEPA_FAMILY:
        return None
    return "no_actions" if run.action_cond is False else "actions"


def setting_of(run: Run, keys: list[str]) -> str:
    return " ".join(f"{k.split('.')[-1]}={run.param(k)}" for k in keys) or "all runs"


def _mean(runs: list[Run], read) -> float | None:
    values = [v for v in (read(r) for r in runs) if v is not None]
    return statistics.fmean(values) if values else None


def contrast_rows(runs: list[Run], keys: list[str]) -> list[dict]:
    """One row per setting: {setting, metric/variant: mean value, ratios}."""
    settings: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.status == "FINISHED" and variant_of(run) is not None:
            settings[setting_of(run, keys)][variant_of(run)].append(run)
    rows = []
    for setting, by_variant in settings.items():
        row = {"setting": setting}
        for variant in VARIANTS:
            group = by_variant.get(variant, [])
            row[f"rot/{variant}"] = _mean(group, lambda r: r.metric(ROTATION))
            row[f"top1/{variant}"] = _mean(group, lambda r: r.top1())
            row[f"top1_m1/{variant}"] = _mean(group, lambda r: r.top1(1))
            row[f"top1_max/{variant}"] = _mean(group, lambda r: r.top1(max(r.acc_by_mval(), default=None)))
            row[f"leak/{variant}"] = _mean(group, lambda r: r.metric(LEAKAGE))
        row["rot_ratio"] = _ratio(row["rot/actions"], row["rot/no_actions"])
        rows.append(row)
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def contrast_markdown(rows: list[dict]) -> str:
    def fmt(value, digits):
        return "–" if value is None else f"{value:.{digits}f}"

    head = ["setting", "rotation R² actions / no actions / untrained", "ratio", "z_AGG top-1 (M_val = M_tr) "
            "actions / no actions / untrained", "z_AGG top-1 actions M_val 1 → max", "leakage R² (actions)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        rot = " / ".join(fmt(row[f"rot/{v}"], 3) for v in VARIANTS)
        top1 = " / ".join(fmt(row[f"top1/{v}"], 1) for v in VARIANTS)
        rising = f"{fmt(row['top1_m1/actions'], 1)} → {fmt(row['top1_max/actions'], 1)}"
        lines.append(f"| {row['setting']} | {rot} | {fmt(row['rot_ratio'], 2)}x | {top1} | {rising} | "
                     f"{fmt(row['leak/actions'], 3)} |")
    return "\n".join(lines)


def write_contrast(runs: list[Run], keys: list[str], out: Path) -> list[Path]:
    """`contrast.md` in `out`, for runs that hold more than one variant."""
    if len({variant_of(r) for r in runs} - {None}) < 2:
        return []
    path = out / "contrast.md"
    path.write_text(contrast_markdown(contrast_rows(runs, keys)) + "\n")
    return [path]
