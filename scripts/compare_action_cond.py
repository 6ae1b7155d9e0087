"""Reproduce the paper's central contrast on the embedded default, on a laptop CPU.

    python scripts/compare_action_cond.py                      # default config, 3 runs (~15 minutes on 2 cores)
    python scripts/compare_action_cond.py train.epochs=5       # overrides apply to every run

Trains three models with the same data, budget and probes, evaluates each offline on its frozen
features (`python -m trainer.evaluate`, the paper's protocol), and prints both the online probe
metrics logged while training and the offline ones:
* `action-cond`: seq-JEPA as in the paper;
* `no-action`: seq-JEPA without action conditioning (Table 1's last row);
* `untrained`: the same network with learning rate 0, probes still trained: the floor.
The paper's claim to check: the encoder pair's equivariance R² (rotation above all) is clearly higher
with action conditioning, while z_AGG stays well above chance for classification and improves with
the number of views aggregated (M_val).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlflow.tracking import MlflowClient  # noqa: E402

from trainer import checkpoint as ckpt  # noqa: E402
from trainer.evaluate import evaluate, load_checkpoint_config, log_to_mlflow  # noqa: E402
from trainer.run import main as train  # noqa: E402

VARIANTS = {
    "action-cond": ["model.action_cond=true"],
    "no-action": ["model.action_cond=false"],
    "untrained": ["model.action_cond=true", "optim.lr=0", "optim.start_lr=0", "optim.final_lr=0"],
}
GROUPS = ["rotation", "scale", "translation", "brightness", "contrast"]
ONLINE = (["inv/acc_agg", "inv/acc_enc", "equi/r2_enc"] + [f"equi/r2_enc/{g}" for g in GROUPS]
          + ["equi/r2_agg", "train/eff_rank_enc", "train/eff_rank_agg", "val/loss"])
OFFLINE = (["eval/inv/acc_enc", "eval/equi/r2_enc"] + [f"eval/equi/r2_enc/{g}" for g in GROUPS]
           + ["eval/equi/r2_agg", "eval/equi/r2_agg/rotation"])


def _table(title: str, keys: list[str], results: dict[str, dict]) -> None:
    print(f"\n{title}\n{'metric':<30}" + "".join(f"{name:>14}" for name in results))
    for key in keys:
        print(f"{key:<30}" + "".join(f"{results[n].get(key, float('nan')):>14.3f}" for n in results))


def main(overrides: list[str]) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    uri = f"sqlite:///{tempfile.gettempdir()}/seq-jepa-compare-{stamp}.db"
    results = {}
    for name, variant in VARIANTS.items():
        t0 = time.time()
        run_name = f"compare-{name}-{stamp}"
        code = train(overrides + variant + [f"run.name={run_name}", f"tracking.tracking_uri={uri}",
                                            "tracking.experiment=compare-action-cond"])
        if code != 0:
            sys.exit(code)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("compare-action-cond").experiment_id
        run = client.search_runs([experiment], filter_string=f"tags.`seq_jepa.run_name` = '{run_name}'")[0]
        checkpoint = ckpt.latest_checkpoint(Path(run.data.params["run.storage_path"]) / run_name)
        config = load_checkpoint_config(checkpoint, [])
        offline = evaluate(config, checkpoint)
        log_to_mlflow(config, checkpoint, offline)
        results[name] = dict(run.data.metrics, **offline, minutes=(time.time() - t0) / 60)
    print(f"\nMLflow store: {uri}")
    _table("online probes (trained alongside the model, last validation pass)", ONLINE, results)
    acc_agg = sorted((k for k in results["action-cond"] if k.startswith("eval/inv/acc_agg/M")),
                     key=lambda k: int(k.rsplit("M", 1)[1]))
    _table("offline probes (frozen model, cached features; python -m trainer.evaluate)", acc_agg + OFFLINE, results)
    _table("time", ["minutes"], results)


if __name__ == "__main__":
    main(sys.argv[1:])
