"""The paper's Table 1 and its invariance-equivariance scatter, from runs of several methods
(docs/paper-and-original-code.md#table-1).

One row (one point) per variant: the sweep's `variants` name, or the method's label with its action
conditioning; the mean over the variant's runs (seeds). A method's family (the point's colour) and label come
from the catalogue, trainer/methods/catalog.py. The columns follow Table 1's protocol:
  top-1          a method with an aggregate (seq-JEPA): linear probe on z_AGG at M_val = M_tr (its best M_val
                 in its own column); the others (the baselines): linear probe on the encoder output
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

from sweeps.plot import pyplot
from sweeps.runs import Run
from trainer import metric_names as names
from trainer.methods.catalog import EQUIVARIANT, INVARIANT, SEQ_JEPA_FAMILY
from trainer.tracking import UNTRAINED_TAG, VARIANT_TAG

FLOOR = "floor"  # the untrained encoder's row
UNKNOWN = "unknown method"  # a run of a method the catalogue does not know (a removed one)
FAMILY_COLOURS = {SEQ_JEPA_FAMILY: "tab:red", INVARIANT: "tab:blue", EQUIVARIANT: "tab:green", FLOOR: "grey",
                  UNKNOWN: "black"}
COLUMNS = {  # column -> (how to read it from a run, digits)
    "top-1": (lambda r: r.top1(), 1),
    "best M_val top-1": (lambda r: max(r.acc_by_mval().values(), default=None), 1),
    "encoder top-1": (lambda r: r.metric(names.EVAL_ACC_ENC), 1),
    "R² rel. (all)": (lambda r: r.metric(names.EVAL_R2_ENC), 3),
    "R² rel. rotation": (lambda r: r.metric(names.per_group(names.EVAL_R2_ENC, "rotation")), 3),
    "R² abs. rotation": (lambda r: r.metric(names.EVAL_R2_ABS_ROTATION), 3),
    "eff. rank": (lambda r: r.metric(names.EVAL_EFF_RANK_ENC, r.metric(names.VAL_EFF_RANK["enc"])), 1),
}


@dataclass
class Row:
    variant: str
    method: str  # model.method
    family: str  # the method's family in the catalogue, or FLOOR (untrained), or UNKNOWN
    label: str = ""  # the method's display name (the catalogue's label)
    runs: list[Run] = field(default_factory=list)

    def value(self, column: str) -> float | None:
        read = COLUMNS[column][0]
        values = [v for v in (read(r) for r in self.runs) if v is not None]
        return statistics.fmean(values) if values else None


def _variant(run: Run) -> str:
    if VARIANT_TAG in run.tags:
        return run.tags[VARIANT_TAG]
    if run.tags.get(UNTRAINED_TAG) == "true":
        return f"{run.method_label} (untrained)"
    return run.method_label + (" (no actions)" if run.action_cond is False else "")


def _family(run: Run) -> str:
    if run.tags.get(UNTRAINED_TAG) == "true":
        return FLOOR
    return run.entry.family if run.entry is not None else UNKNOWN


def table1_rows(runs: list[Run]) -> list[Row]:
    """Finished runs grouped by variant, in the order the variants first appear."""
    rows: dict[str, Row] = {}
    for run in runs:
        if run.status != "FINISHED":
            continue
        variant = _variant(run)
        rows.setdefault(variant, Row(variant, run.method, _family(run), run.method_label))
        rows[variant].runs.append(run)
    return list(rows.values())


def table1_markdown(rows: list[Row]) -> str:
    head = ["variant", "method", "runs", *COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.variant, row.label or row.method, str(len(row.runs))]
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
        if row.family == FLOOR:  # the untrained encoder: lines to read every trained point against
            ax.axhline(y, color="grey", linestyle="--", linewidth=0.8)
            ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
        ax.scatter(x, y, s=55, color=FAMILY_COLOURS[row.family], edgecolors="black", linewidths=0.5)
        ax.annotate(row.variant, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    shown = {row.family for row, _, _ in points}
    for family, colour in FAMILY_COLOURS.items():
        if family == UNKNOWN and family not in shown:
            continue
        ax.scatter([], [], s=55, color=colour, edgecolors="black", linewidths=0.5, label=family)
    ax.set_xlabel(f"equivariance: {x_column} (relative action from encoder pairs)")
    ax.set_ylabel("invariance: top-1 % (with an aggregate: z_AGG at M_val = M_tr; others: encoder)")
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
