"""Training methods over one interface (`Method`): seq-JEPA and the paper's baselines (spec §5).

Each method is a small module: its heads, its loss, which views and actions of the shared batch it uses,
whether it keeps an EMA target (`ema_pairs`), and the features the probes read (`MethodOutput`). The
trainer around it (data, parallelism, EMA, checkpoints, probes, evaluation, tracking, sweeps) is shared.
"""

from trainer.config import METHOD_NAMES, MethodConfig
from trainer.methods.base import Method, MethodOutput
from trainer.methods.registry import BASELINES, build_method, build_model, method_class
from trainer.methods.seq_jepa import SeqJEPA, SeqJEPAOutput

__all__ = ["BASELINES", "METHOD_NAMES", "Method", "MethodConfig", "MethodOutput", "SeqJEPA", "SeqJEPAOutput",
           "build_method", "build_model", "method_class"]
