"""Training speed of named runs side by side, from their MLflow store: what `scripts/gpu_check.sh` prints for the two
data modes (`data.render_on`) and compile on/off.

    python -m scripts.window_table sqlite:///path/mlflow.db RUN_NAME [RUN_NAME ...]

Per run: the settings that decide the speed (its logged params) and the median over its logging windows after the
first (which holds the start-up and, compiled, the compilation) of `train/samples_per_s`, `train/mfu` and
`train/data_wait_frac`.
"""

from __future__ import annotations

import statistics
import sys

from mlflow.tracking import MlflowClient

from trainer.metric_names import DATA_WAIT_FRAC, MFU, SAMPLES_PER_S

SETTINGS = ("data.render_on", "data.draws_per_sample", "train.compile", "train.precision", "data.loader_workers")
METRICS = (SAMPLES_PER_S, MFU, DATA_WAIT_FRAC)


def steady(client: MlflowClient, run_id: str, key: str) -> float | None:
    values = [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
    return statistics.median(values[1:] or values) if values else None


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    uri, names = argv[0], argv[1:]
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    print(f"{'run':<24} " + " ".join(f"{s.split('.')[-1]:>16}" for s in SETTINGS)
          + " " + " ".join(f"{m:>20}" for m in METRICS))
    missing = []
    for name in names:
        runs = client.search_runs(experiments, f"tags.`mlflow.runName` = '{name}'", max_results=1,
                                  order_by=["attributes.start_time DESC"])
        if not runs:
            missing.append(name)
            continue
        run = runs[0]
        settings = [run.data.params.get(s, "-") for s in SETTINGS]
        values = [steady(client, run.info.run_id, m) for m in METRICS]
        print(f"{name:<24} " + " ".join(f"{s:>16}" for s in settings) + " "
              + " ".join(f"{'-' if v is None else f'{v:.4g}':>20}" for v in values))
    if missing:
        print(f"no run named {', '.join(missing)} in {uri}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
