"""The paper's figures from MLflow runs: a sweep's trials, or every training run of an experiment.

    python sweeps/report.py --sweep seq_len_x_action_cond            # the sweep's parent run, by name
    python sweeps/report.py --experiment seq-jepa --out reports/     # all training runs of an experiment
    python sweeps/report.py --parent-run-id ID --tracking-uri http://mlflow:5000

Figures (PNG, in --out and, for a sweep, attached to its parent run under `report/`):
  heatmap_acc_mtr_mval.png  z_AGG top-1 for each M_tr (columns, `model.seq_len`) and M_val (rows,
                            `eval/inv/acc_agg/M{k}`), one panel per setting of the other swept keys
  inv_equi_scatter.png      invariance (z_AGG top-1 at M_val = M_tr) against equivariance (R² of the
                            relative transformation from encoder pairs), one labelled point per run
  acc_vs_mval.png           z_AGG top-1 against M_val, one line per run
and `trials.md`, the table of every run's settings and metrics. Runs of several methods (`model.method`)
add the paper's Table 1 (`table1.md`) and its invariance-equivariance scatter, one point per method
(`table1_scatter.png`; sweeps/table1.py); runs with and without action conditioning add the contrast table
(`contrast.md`; sweeps/contrast.py).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.redact import redact_text  # noqa: E402 - after the sys.path fix above

MVAL_METRIC = re.compile(r"^eval/inv/acc_agg/M(\d+)$")
SEQ_LEN = "model.seq_len"
# Equivariance, most telling first: rotation is what an untrained encoder cannot read (design.md).
R2_KEYS = ("eval/equi/r2_enc/rotation", "eval/equi/r2_enc", "equi/r2_enc/rotation", "equi/r2_enc")


@dataclass
class Run:
    run_id: str
    name: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    label: str  # the swept values, e.g. "seq_len=3 action_cond=True"
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def seq_len(self) -> int | None:
        value = self.params.get(SEQ_LEN)
        return int(value) if value is not None else None

    def acc_by_mval(self) -> dict[int, float]:
        found = ((MVAL_METRIC.match(k), v) for k, v in self.metrics.items())
        return dict(sorted((int(m.group(1)), v) for m, v in found if m))

    def accuracy(self) -> tuple[str, float] | None:
        """z_AGG top-1 at M_val = M_tr (the paper's diagonal), else the online probe's."""
        key = f"eval/inv/acc_agg/M{self.seq_len}"
        if key in self.metrics:
            return key, self.metrics[key]
        return ("inv/acc_agg", self.metrics["inv/acc_agg"]) if "inv/acc_agg" in self.metrics else None

    def equivariance(self) -> tuple[str, float] | None:
        return next(((k, self.metrics[k]) for k in R2_KEYS if k in self.metrics), None)


# ---------------------------------------------------------------------------------------------
# Runs out of MLflow.


def _to_run(mlflow_run) -> Run:
    from trainer.tracking import PARAMS_TAG

    tags = mlflow_run.data.tags
    name = tags.get("mlflow.runName", mlflow_run.info.run_id)
    return Run(mlflow_run.info.run_id, name, mlflow_run.info.status, dict(mlflow_run.data.params),
               dict(mlflow_run.data.metrics), tags.get(PARAMS_TAG) or name, dict(tags))


def _search(uri: str, experiment_ids: list[str], filter_string: str) -> list:
    from mlflow.tracking import MlflowClient

    client, runs, token = MlflowClient(uri), [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=500, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def child_runs(uri: str, parent_run_id: str) -> list[Run]:
    """A sweep's trials: the runs nested under its parent run."""
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient(uri).get_run(parent_run_id).info.experiment_id
    return [_to_run(r) for r in _search(uri, [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")]


def experiment_runs(uri: str, experiment: str) -> list[Run]:
    """Every training run of an experiment (sweep parent runs left out)."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient(uri).get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no MLflow experiment named '{experiment}' at {redact_text(uri)}")
    return [_to_run(r) for r in _search(uri, [found.experiment_id], "") if SEQ_LEN in r.data.params]


def find_sweep(uri: str, experiment: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    from trainer.tracking import ROLE_TAG, SWEEP_TAG

    found = MlflowClient(uri).get_experiment_by_name(experiment)
    runs = [] if found is None else _search(uri, [found.experiment_id],
                                            f"tags.`{SWEEP_TAG}` = '{name}' and tags.`{ROLE_TAG}` = 'sweep'")
    if not runs:
        raise LookupError(f"no sweep named '{name}' in MLflow experiment '{experiment}' at {redact_text(uri)}")
    return runs[-1].info.run_id


# ---------------------------------------------------------------------------------------------
# The table and the figures.


def varying_keys(runs: list[Run], candidates: list[str] | None = None) -> list[str]:
    """Config keys whose value differs between runs (the swept ones, if given, first)."""
    keys = list(candidates or [])
    everything = sorted({k for r in runs for k in r.params}, key=lambda k: (k != SEQ_LEN, k))  # M_tr first
    keys += [k for k in everything if k not in keys and not k.startswith(("run.", "tracking.", "eval."))
             and len({r.params.get(k) for r in runs}) > 1]
    return keys


def markdown_table(runs: list[Run], keys: list[str]) -> str:
    mvals = sorted({m for r in runs for m in r.acc_by_mval()})
    head = ["run", *(k.split(".")[-1] for k in keys), "status", "inv/acc_agg", "equi/r2_enc",
            *(f"acc M_val={m}" for m in mvals), "eval r2_enc", "eval r2_enc/rotation"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(value, digits):
        return "–" if value is None else f"{value:.{digits}f}"

    for r in runs:
        acc = r.acc_by_mval()
        cells = [r.name, *(r.params.get(k, "–") for k in keys), r.status,
                 fmt(r.metrics.get("inv/acc_agg"), 1), fmt(r.metrics.get("equi/r2_enc"), 3),
                 *(fmt(acc.get(m), 1) for m in mvals), fmt(r.metrics.get("eval/equi/r2_enc"), 3),
                 fmt(r.metrics.get("eval/equi/r2_enc/rotation"), 3)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    return plt


def heatmap(runs: list[Run], keys: list[str], path: Path) -> Path | None:
    """M_val (rows) x M_tr (columns) top-1 accuracy; one panel per setting of the other keys."""
    others = [k for k in keys if k != SEQ_LEN]
    cells: dict[tuple, dict[tuple[int, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.seq_len is None:
            continue
        for mval, acc in r.acc_by_mval().items():
            cells[tuple(r.params.get(k) for k in others)][(mval, r.seq_len)].append(acc)
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
    values = [sorted({r.params.get(k) for r in runs}, key=_natural) for k in keys[:2]]
    colours = plt.get_cmap("viridis" if keys and len(values[0]) > 2 else "tab10")
    styles = {}
    for r in runs:
        first = values[0].index(r.params.get(keys[0])) if keys else 0
        second = values[1].index(r.params.get(keys[1])) if len(keys) > 1 else 0
        shade = first / max(len(values[0]) - 1, 1) * 0.9 if keys and len(values[0]) > 2 else first
        styles[r.run_id] = {"color": colours(shade), "linestyle": ("-", "--", ":", "-.")[second % 4],
                            "marker": ("o", "s", "^", "D")[second % 4]}
    return styles


def _natural(value: str | None):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


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
    ax.set_ylabel(f"invariance: top-1 % ({'z_AGG, M_val = M_tr' if points[0][1][0].startswith('eval') else 'online'})")
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
    if len({r.params.get("model.method", "seq_jepa") for r in runs}) > 1:
        from sweeps.table1 import table1_rows, write_table1

        made += write_table1(table1_rows(runs), out)
    from sweeps.contrast import CONTRASTED_KEYS, write_contrast

    made += write_contrast(runs, [k for k in keys if k not in CONTRASTED_KEYS], out)
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
