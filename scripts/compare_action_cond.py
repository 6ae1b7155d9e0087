"""Reproduce the paper's central contrast on the embedded default, on a laptop CPU.

    python scripts/compare_action_cond.py                      # default config, 3 runs
    python scripts/compare_action_cond.py train.epochs=5       # overrides apply to every run

Trains three models with the same data, budget and probes, then prints the final probe metrics:
* `action-cond`: seq-JEPA as in the paper;
* `no-action`: seq-JEPA without action conditioning (Table 1's last row);
* `untrained`: the same network with learning rate 0, probes still trained: the floor.
The paper's claim to check: the encoder pair's equivariance R² (rotation above all) is clearly higher
with action conditioning, while z_AGG stays well above chance for classification.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlflow.tracking import MlflowClient  # noqa: E402

from trainer.run import main as train  # noqa: E402

VARIANTS = {
    "action-cond": ["model.action_cond=true"],
    "no-action": ["model.action_cond=false"],
    "untrained": ["model.action_cond=true", "optim.lr=0", "optim.start_lr=0", "optim.final_lr=0"],
}
GROUPS = ["rotation", "scale", "translation", "brightness", "contrast"]
COLUMNS = (["inv/acc_agg", "inv/acc_enc", "equi/r2_enc"] + [f"equi/r2_enc/{g}" for g in GROUPS]
           + ["equi/r2_agg", "train/eff_rank_enc", "train/eff_rank_agg", "val/loss"])


def main(overrides: list[str]) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    uri = f"sqlite:///{tempfile.gettempdir()}/seq-jepa-compare-{stamp}.db"
    results = {}
    for name, variant in VARIANTS.items():
        t0 = time.time()
        code = train(overrides + variant + [f"run.name=compare-{name}-{stamp}", f"tracking.tracking_uri={uri}",
                                            "tracking.experiment=compare-action-cond"])
        if code != 0:
            sys.exit(code)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("compare-action-cond").experiment_id
        run = client.search_runs([experiment], filter_string=f"tags.`seq_jepa.run_name` = 'compare-{name}-{stamp}'")[0]
        results[name] = dict(run.data.metrics, minutes=(time.time() - t0) / 60)
    print(f"\nMLflow store: {uri}\n")
    print(f"{'metric':<26}" + "".join(f"{name:>14}" for name in results))
    for key in COLUMNS + ["minutes"]:
        print(f"{key:<26}" + "".join(f"{results[n].get(key, float('nan')):>14.3f}" for n in results))


if __name__ == "__main__":
    main(sys.argv[1:])
