"""Training methods over one interface (`base.Method`): seq-JEPA and the paper's baselines.

Each method is a small module: its heads, its loss, which views and actions of the shared batch it uses,
whether it keeps an EMA target (`ema_pairs`), the features the probes read and its loss terms (`MethodOutput`).
`catalog.py` lists them all (torch-free: the config and the reports read it); `build.py` builds the one a run's
config names. The trainer around a method (data, parallelism, EMA, checkpoints, probes, evaluation, tracking,
sweeps) is shared. Import from the modules (`trainer.methods.build`, ...): this package face stays empty, so
that reading the catalogue never imports torch.
"""
