"""Checkpoints: one folder's DCP files (`dcp`), loading without running code from the file (`safe_load`), a
run's checkpoint folders (`run_folders`) and where a checkpoint to evaluate lives, local or S3 (`source`)."""
