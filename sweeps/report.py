"""The paper's figures from MLflow runs: a sweep's trials, or every training run of an experiment.

    python sweeps/report.py --sweep seq_len_x_action_cond            # the sweep's parent run, by name
    python sweeps/report.py --experiment seq-jepa --out reports/     # all training runs of an experiment
    python sweeps/report.py --parent-run-id ID --tracking-uri http://mlflow:5000

Figures (PNG, in --out and, for a sweep, attached to its parent run under `report/`):
  heatmap_acc_mtr_mval.png  z_AGG top-1 for each M_tr (columns, `model.seq_len`) and M_val (rows,
                            `eval/inv/acc_agg/M{k}`), one panel per setting of the other swept keys
  inv_equi_scatter.png      invariance (top-1 at M_val = M_tr: z_AGG's, the encoder's for a method without
                            an aggregate; sweeps/runs.py) against equivariance (R² of the relative
                            transformation from encoder pairs), one labelled point per run
  acc_vs_mval.png           z_AGG top-1 against M_val, one line per run
and `trials.md`, the table of every run's settings and metrics. Runs logged before version 0.2 are read under
their old param and metric names (sweeps/runs.py). Runs of several methods (`model.method`)
add the paper's Table 1 (`table1.md`) and its invariance-equivariance scatter, one point per method
(`table1_scatter.png`; sweeps/table1.py); runs with and without action conditioning add the contrast table
(`contrast.md`; sweeps/contrast.py); runs evaluated at every kept checkpoint add the probes against training steps
(`learning_curves.png`, `ratio_by_step.md`; sweeps/learning_curves.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

from sweeps.contrast import CONTRASTED_KEYS, write_contrast
from sweeps.learning_curves import write_learning_curves
from sweeps.plot import pyplot
from sweeps.runs import SEQ_LEN, Run, child_runs, current_name, experiment_runs, find_sweep
from sweeps.table1 import table1_rows, write_table1
from trainer import metric_names as names

# The table's metric columns: the online probes' (last evaluated epoch), then the offline ones.
ONLINE_COLUMNS = (names.VAL_ACC_AGG, names.VAL_R2_ENC)
EVAL_R2_ROTATION = names.per_group(names.EVAL_R2_ENC, "rotation")

# ---------------------------------------------------------------------------------------------
# The table and the figures.


def varying_keys(runs: list[Run], candidates: list[str] | None = None) -> list[str]:
    """Config keys whose value differs between runs (the swept ones, if given, first), by their current names:
    an old run's `model.action_cond` and a new one's `seq_jepa.action_cond` are one key."""
    keys = list(dict.fromkeys(current_name(k) for k in candidates or []))
    everything = sorted({current_name(k) for r in runs for k in r.params}, key=lambda k: (k != SEQ_LEN, k))  # M_tr
    keys += [k for k in everything if k not in keys and not k.startswith(("run.", "tracking.", "eval."))
             and len({r.param(k) for r in runs}) > 1]
    return keys


def markdown_table(runs: list[Run], keys: list[str]) -> str:
    mvals = sorted({m for r in runs for m in r.acc_by_mval()})
    head = ["run", *(k.split(".")[-1] for k in keys), "status", *ONLINE_COLUMNS,
            *(f"acc M_val={m}" for m in mvals), "eval r2_enc", "eval r2_enc/rotation"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(value, digits):
        return "–" if value is None else f"{value:.{digits}f}"

    for r in runs:
        acc = r.acc_by_mval()
        cells = [r.name, *(r.param(k, "–") for k in keys), r.status,
                 fmt(r.metric(names.VAL_ACC_AGG), 1), fmt(r.metric(names.VAL_R2_ENC), 3),
                 *(fmt(acc.get(m), 1) for m in mvals), fmt(r.metric(names.EVAL_R2_ENC), 3),
                 fmt(r.metric(EVAL_R2_ROTATION), 3)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def heatmap(runs: list[Run], keys: list[str], path: Path) -> Path | None:
    """M_val (rows) x M_tr (columns) top-1 accuracy; one panel per setting of the other keys."""
    others = [k for k in keys if k != SEQ_LEN]
    cells: dict[tuple, dict[tuple[int, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.seq_len is None:
            continue
        for mval, acc in r.acc_by_mval().items():
            cells[tuple(r.param(k) for k in others)][(mval, r.seq_len)].append(acc)
    if not cells:
        return None
    plt = pyplot()
    values = [v for panel in cells.values() for vs in panel.values() for v in vs]
    vmin, vmax = min(values), max(values)
    fig, axes = plt.subplots(1, len(cells), figsize=(1.0 + 3.4 * len(cells), 4.2), squeeze=False)
    for ax, (setting, panel) in zip(axes[0], sorted(cells.items(), key=lambda kv: str(kv[0]))):
        mtrs, mvals = sorted({c[1] for c in panel}), sorted({c[0] for c in panel})
        grid = [[sum(panel[(mv, mt)]) / len(panel[(mv, mt)]) if (mv, mt) in panel else float("nan")
                 for mt in mtrs] for mv in mvals]
        image = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto", origin="lower")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v == v:  # not NaN
                    dark = (v - vmin) / max(vmax - vmin, 1e-9) < 0.6
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
        ax.set_xticks(range(len(mtrs)), mtrs)
        ax.set_yticks(range(len(mvals)), mvals)
        ax.set_xlabel("M_tr (training sequence length)")
        ax.set_ylabel("M_val (inference length)")
        ax.set_title(", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(others, setting)) or "all runs",
                     fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), label="z_AGG linear top-1 (%)", shrink=0.9)
    fig.suptitle("Invariance by sequence length: linear probe on z_AGG", fontsize=11)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def _styles(runs: list[Run], keys: list[str]) -> dict[str, dict]:
    """Run id -> matplotlib style: colour by the first varying key's value, line/marker by the second's."""
    plt = pyplot()
    values = [sorted({r.param(k) for r in runs}, key=_natural) for k in keys[:2]]
    colours = plt.get_cmap("viridis" if keys and len(values[0]) > 2 else "tab10")
    styles = {}
    for r in runs:
        first = values[0].index(r.param(keys[0])) if keys else 0
        second = values[1].index(r.param(keys[1])) if len(keys) > 1 else 0
        shade = first / max(len(values[0]) - 1, 1) * 0.9 if keys and len(values[0]) > 2 else first
        styles[r.run_id] = {"color": colours(shade), "linestyle": ("-", "--", ":", "-.")[second % 4],
                            "marker": ("o", "s", "^", "D")[second % 4]}
    return styles


def _natural(value: str | None):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _top1_source(key: str) -> str:
    if names.EVAL_ACC_AGG_M.match(key):
        return "z_AGG, M_val = M_tr"
    return "encoder" if key == names.EVAL_ACC_ENC else "online"


def scatter(runs: list[Run], keys: list[str], path: Path) -> Path | None:
    points = [(r, r.accuracy(), r.equivariance()) for r in runs]
    points = [(r, acc, r2) for r, acc, r2 in points if acc is not None and r2 is not None]
    if not points:
        return None
    plt = pyplot()
    styles = _styles(runs, keys)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    # Short labels (the values only, keys in the title); neighbours in accuracy alternate above and below.
    for i, (r, (_, acc), (_, r2)) in enumerate(sorted(points, key=lambda p: p[1][1])):
        style = styles[r.run_id]
        ax.scatter(r2, acc, s=45, color=style["color"], marker=style["marker"], edgecolors="black", linewidths=0.5)
        short = ", ".join(part.split("=", 1)[-1] for part in r.label.split())
        ax.annotate(short, (r2, acc), textcoords="offset points", xytext=(6, 3 if i % 2 else -9), fontsize=7)
    keys_title = ", ".join(part.split("=", 1)[0] for part in points[0][0].label.split() if "=" in part)
    ax.set_xlabel(f"equivariance: R² ({points[0][2][0]})")
    sources = sorted({_top1_source(acc[0]) for _, acc, _ in points})
    ax.set_ylabel(f"invariance: top-1 % ({'; '.join(sources)})")
    ax.set_title("Invariance vs equivariance, one point per run" + (f"\n(labels: {keys_title})" if keys_title
                                                                    else ""), fontsize=10)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def curves(runs: list[Run], keys: list[str], path: Path) -> Path | None:
    lines = [(r, r.acc_by_mval()) for r in runs if r.acc_by_mval()]
    if not lines:
        return None
    plt = pyplot()
    styles = _styles(runs, keys)
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for r, acc in lines:
        ax.plot(list(acc), list(acc.values()), markersize=4, label=r.label, **styles[r.run_id])
    ax.set_xlabel("M_val (views aggregated at inference)")
    ax.set_ylabel("z_AGG linear top-1 (%)")
    ax.set_title("Accuracy against inference length", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def make_report(runs: list[Run], out: Path, uri: str | None = None, parent_run_id: str | None = None,
                keys: list[str] | None = None) -> list[Path]:
    """Draw every figure the runs support into `out`; attach them to the parent run if given."""
    out.mkdir(parents=True, exist_ok=True)
    keys = varying_keys(runs, keys)
    (out / "trials.md").write_text(markdown_table(runs, keys) + "\n")
    made = [p for p in (heatmap(runs, keys, out / "heatmap_acc_mtr_mval.png"),
                        scatter(runs, keys, out / "inv_equi_scatter.png"),
                        curves(runs, keys, out / "acc_vs_mval.png")) if p is not None]
    if len({r.method for r in runs}) > 1:
        made += write_table1(table1_rows(runs), out)
    made += write_contrast(runs, [k for k in keys if k not in CONTRASTED_KEYS], out)
    made += write_learning_curves(runs, uri, out)
    if uri and parent_run_id:
        from trainer.tracking import MetricsLogger

        logger = MetricsLogger(uri, parent_run_id, enabled=True)
        for path in [out / "trials.md", *made]:
            logger.log_artifact(str(path), "report")
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw the paper's figures from MLflow runs.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sweep", help="a sweep's name (its parent run in --experiment)")
    source.add_argument("--parent-run-id", help="a sweep's parent run id")
    source.add_argument("--all-runs", action="store_true", help="every training run of --experiment")
    parser.add_argument("--experiment", help="MLflow experiment (default: seq-jepa-sweeps, or seq-jepa with "
                                             "--all-runs)")
    parser.add_argument("--tracking-uri", default="sqlite:///~/seq-jepa/mlflow.db",
                        help="MLflow store (MLFLOW_TRACKING_URI wins)")
    parser.add_argument("--out", help="folder for the PNGs (default ~/seq-jepa/reports/<name>)")
    parser.add_argument("--no-log", action="store_true", help="do not attach the figures to the parent run")
    args = parser.parse_args(argv)

    from trainer.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    try:
        if args.all_runs:
            experiment = args.experiment or "seq-jepa"
            runs, parent, name = experiment_runs(uri, experiment), None, experiment
        else:
            parent = args.parent_run_id or find_sweep(uri, args.experiment or "seq-jepa-sweeps", args.sweep)
            runs, name = child_runs(uri, parent), args.sweep or parent
    except LookupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: no runs to draw in {name} at {uri}", file=sys.stderr)
        return 2
    out = Path(os.path.expanduser(args.out or f"~/seq-jepa/reports/{name}")).resolve()
    made = make_report(runs, out, uri, None if args.no_log else parent)
    print(markdown_table(runs, varying_keys(runs)))
    for path in made:
        print(f"[seq-jepa report] {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
