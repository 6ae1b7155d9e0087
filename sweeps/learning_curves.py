"""The probes against training steps (issue 25): runs whose every kept checkpoint was evaluated
(`python -m trainer.evaluate RUN --every-checkpoint`, a sweep's `evaluate: {every_checkpoint: true}`).

`learning_curves.png`: rotation R² of the encoder pair, top-1 (z_AGG at M_val 6 for seq-JEPA, the encoder's for a
method without an aggregate) and the single-view z_AGGs' rotation R² (leakage) against steps, one line per arm (a
sweep's variant, else the method), the untrained floor as a band (the range of the floor runs' values).
`ratio_by_step.md`: at each evaluated step, every arm's rotation R² and top-1 and the with/without-actions ratio
of rotation R², the paper's contrast (Table 1: 0.71 against 0.29 on 3DIEBench, 2.4x).
"""

from __future__ import annotations

from pathlib import Path

from sweeps.contrast import LEAKAGE, ROTATION, variant_of
from sweeps.plot import pyplot
from sweeps.runs import Run, metric_history
from trainer import metric_names as names
from trainer.tracking import VARIANT_TAG

TOP1_M_VAL = 6  # the inference length the curves read z_AGG at (the laptop's eval.seq_lens go up to 6)


def arm_of(run: Run) -> str:
    """The run's line: its sweep variant, else its method (and `no actions` for seq-JEPA without them)."""
    if run.tags.get(VARIANT_TAG):
        return run.tags[VARIANT_TAG]
    return f"{run.method_label} no actions" if run.action_cond is False else run.method_label


def _curves(run: Run, uri: str) -> dict[str, dict[int, float]]:
    """{rotation, top1, leakage: {step: value}} of one run."""
    top1 = run.top1_key(TOP1_M_VAL) or names.EVAL_ACC_ENC
    return {"rotation": metric_history(uri, run.run_id, ROTATION), "top1": metric_history(uri, run.run_id, top1),
            "leakage": metric_history(uri, run.run_id, LEAKAGE)}


def collect(runs: list[Run], uri: str) -> tuple[dict[str, dict], dict[str, list[float]]]:
    """({arm: curves} of the trained runs evaluated at two steps or more, {metric: the floor runs' values}).
    Several runs of one arm (seeds) are averaged step by step."""
    arms: dict[str, list[dict]] = {}
    floor: dict[str, list[float]] = {"rotation": [], "top1": [], "leakage": []}
    for run in runs:
        curves = _curves(run, uri)
        if variant_of(run) == "untrained":
            for key, series in curves.items():
                floor[key] += list(series.values())
        elif len(curves["rotation"]) >= 2:
            arms.setdefault(arm_of(run), []).append(curves)
    averaged = {arm: {key: _mean_by_step([c[key] for c in group]) for key in ("rotation", "top1", "leakage")}
                for arm, group in arms.items()}
    return averaged, floor


def _mean_by_step(series: list[dict[int, float]]) -> dict[int, float]:
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    return {step: sum(s[step] for s in series) / len(series) for step in steps}


PANELS = (("rotation", "rotation R² (encoder pair)"), ("top1", f"top-1 % (z_AGG at M_val {TOP1_M_VAL}; encoder)"),
          ("leakage", "rotation R² of single-view z_AGGs (leakage)"))


def draw(arms: dict[str, dict], floor: dict[str, list[float]], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.2))
    for ax, (key, title) in zip(axes, PANELS):
        for arm, curves in arms.items():
            if curves[key]:
                ax.plot(list(curves[key]), list(curves[key].values()), marker="o", markersize=3, label=arm)
        if floor[key]:
            low, high = min(floor[key]), max(floor[key])
            ax.axhspan(low, high, color="grey", alpha=0.25, label="untrained floor")
            ax.axhline(low, color="grey", linewidth=0.8, linestyle="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def ratio_markdown(arms: dict[str, dict]) -> str:
    """One row per evaluated step: every arm's rotation R² and top-1, and actions / no_actions on rotation R²."""
    steps = sorted({step for curves in arms.values() for step in curves["rotation"]})
    names_ = list(arms)

    def cell(arm: str, key: str, step: int, digits: int) -> str:
        value = arms[arm][key].get(step)
        return "–" if value is None else f"{value:.{digits}f}"

    head = ["step", *(f"rotation R² {a}" for a in names_), "actions / no actions",
            *(f"top-1 {a}" for a in names_)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for step in steps:
        with_actions = arms.get("actions", {}).get("rotation", {}).get(step)
        without = arms.get("no_actions", {}).get("rotation", {}).get(step)
        ratio = f"{with_actions / without:.2f}x" if with_actions is not None and without else "–"
        lines.append("| " + " | ".join([str(step), *(cell(a, "rotation", step, 3) for a in names_), ratio,
                                        *(cell(a, "top1", step, 1) for a in names_)]) + " |")
    return "\n".join(lines)


def write_learning_curves(runs: list[Run], uri: str | None, out: Path) -> list[Path]:
    """The figure and the ratio table, for runs with an evaluated checkpoint at two steps or more; else none."""
    if uri is None:
        return []
    arms, floor = collect(runs, uri)
    if not arms:
        return []
    table = out / "ratio_by_step.md"
    table.write_text(ratio_markdown(arms) + "\n")
    return [draw(arms, floor, out / "learning_curves.png"), table]
