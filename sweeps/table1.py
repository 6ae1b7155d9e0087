"""The paper's Table 1 and its invariance-equivariance scatter, from runs of several methods (spec §6.1).

One row (one point) per variant: the sweep's `variants` name, or the method with its action conditioning; the
mean over the variant's runs (seeds). The columns follow Table 1's protocol:
  top-1          seq-JEPA: linear probe on z_AGG at M_val = M_tr (its best M_val in its own column);
                 the baselines, which have no aggregate: linear probe on the encoder output
  R² rel.        MLP regression of the relative action view 1 -> 2 from the encoder pair, all action
                 dimensions and the rotation alone (`eval/equi/r2_enc[/rotation]`)
  R² abs. rot.   MLP regression of a view's absolute rotation from its encoder output
  eff. rank      effective rank (RankMe) of the encoder outputs on the validation split
The untrained encoder (`optim.lr=0`, tag `untrained=true`) is the floor every trained row is read against.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from sweeps.report import Run, pyplot
from trainer.tracking import UNTRAINED_TAG, VARIANT_TAG

INVARIANT = ("simclr", "byol", "vicreg")  # the paper's invariant SSL methods
FAMILY_COLOURS = {"seq-JEPA": "tab:red", "invariant": "tab:blue", "equivariant": "tab:green", "floor": "grey"}
COLUMNS = {  # column -> (how to read it from a run, digits)
    "top-1": (lambda r: _top1(r), 1),
    "best M_val top-1": (lambda r: max(r.acc_by_mval().values(), default=None), 1),
    "encoder top-1": (lambda r: r.metrics.get("eval/inv/acc_enc"), 1),
    "R² rel. (all)": (lambda r: r.metrics.get("eval/equi/r2_enc"), 3),
    "R² rel. rotation": (lambda r: r.metrics.get("eval/equi/r2_enc/rotation"), 3),
    "R² abs. rotation": (lambda r: r.metrics.get("eval/equi/r2_abs/rotation"), 3),
    "eff. rank": (lambda r: r.metrics.get("eval/eff_rank_enc", r.metrics.get("train/eff_rank_enc")), 1),
}


def _top1(run: Run) -> float | None:
    if run.params.get("model.method", "seq_jepa") == "seq_jepa":
        return run.metrics.get(f"eval/inv/acc_agg/M{run.seq_len}")
    return run.metrics.get("eval/inv/acc_enc")


@dataclass
class Row:
    variant: str
    method: str
    family: str
    runs: list[Run] = field(default_factory=list)

    def value(self, column: str) -> float | None:
        read = COLUMNS[column][0]
        values = [v for v in (read(r) for r in self.runs) if v is not None]
        return statistics.fmean(values) if values else None


def _variant(run: Run) -> str:
    if VARIANT_TAG in run.tags:
        return run.tags[VARIANT_TAG]
    name = run.params.get("model.method", "seq_jepa")
    if run.tags.get(UNTRAINED_TAG) == "true":
        return f"{name} (untrained)"
    return name + (" (no actions)" if name == "seq_jepa" and run.params.get("model.action_cond") == "False" else "")


def _family(run: Run) -> str:
    method = run.params.get("model.method", "seq_jepa")
    if run.tags.get(UNTRAINED_TAG) == "true":
        return "floor"
    return "seq-JEPA" if method == "seq_jepa" else "invariant" if method in INVARIANT else "equivariant"


def table1_rows(runs: list[Run]) -> list[Row]:
    """Finished runs grouped by variant, in the order the variants first appear."""
    rows: dict[str, Row] = {}
    for run in runs:
        if run.status != "FINISHED":
            continue
        variant = _variant(run)
        rows.setdefault(variant, Row(variant, run.params.get("model.method", "seq_jepa"), _family(run)))
        rows[variant].runs.append(run)
    return list(rows.values())


def table1_markdown(rows: list[Row]) -> str:
    head = ["variant", "method", "runs", *COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.variant, row.method, str(len(row.runs))]
        for column, (_, digits) in COLUMNS.items():
            value = row.value(column)
            cells.append("–" if value is None else f"{value:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table1_scatter(rows: list[Row], path: Path) -> Path | None:
    """Top-1 against rotation R² (all dimensions where the actions have no rotation), one point per variant."""
    x_column = "R² rel. rotation" if any(r.value("R² rel. rotation") is not None for r in rows) else "R² rel. (all)"
    points = [(row, row.value(x_column), row.value("top-1")) for row in rows]
    points = [(row, x, y) for row, x, y in points if x is not None and y is not None]
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 5.0))
    for row, x, y in points:
        if row.family == "floor":  # the untrained encoder: lines to read every trained point against
            ax.axhline(y, color="grey", linestyle="--", linewidth=0.8)
            ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
        ax.scatter(x, y, s=55, color=FAMILY_COLOURS[row.family], edgecolors="black", linewidths=0.5)
        ax.annotate(row.variant, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    for family, colour in FAMILY_COLOURS.items():
        ax.scatter([], [], s=55, color=colour, edgecolors="black", linewidths=0.5, label=family)
    ax.set_xlabel(f"equivariance: {x_column} (relative action from encoder pairs)")
    ax.set_ylabel("invariance: top-1 % (seq-JEPA: z_AGG at M_val = M_tr; baselines: encoder)")
    ax.set_title("Invariance vs equivariance, one point per method (Table 1)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def write_table1(rows: list[Row], out: Path) -> list[Path]:
    table = out / "table1.md"
    table.write_text(table1_markdown(rows) + "\n")
    return [p for p in (table, table1_scatter(rows, out / "table1_scatter.png")) if p is not None]
