"""`train.compile` (trainer/training/compile.py) on a CPU, with inductor as a run uses it: a compiled run's losses are
eager's within float tolerance, nothing compiles after the first step, and a checkpoint of either kind resumes in the
other; marked `gpu`, reduce-overhead's CUDA graphs on a GPU. The smallest seq-JEPA (convnet width 8, one transformer
layer, batch 8) with dropout 0: inductor draws its own dropout masks (same distribution, not eager's numbers), which
would leave nothing exact to compare.

One compiled run serves the first tests. Its first step compiles every block (inductor builds ~45 C++ kernels): most
of this file's 85 CPU-seconds with an empty compile cache; with a warm one (/tmp/torchinductor_$USER) ~25.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from torch._dynamo.utils import counters

from tests.helpers.runs import tiny_overrides
from trainer.config import load_config, to_dict
from trainer.data import build_loader, normalisation, to_device
from trainer.errors import ConfigError
from trainer.methods.seq_jepa import SeqJEPA
from trainer.model import build_encoder
from trainer.training.compile import compile_model, compiled_units
from trainer.training.setup import build_train_state, train_state_for
from trainer.training.step import synthetic_batch, train_step

CPU = torch.device("cpu")
STEPS, SAVED_AFTER = 4, 2
# Inductor fuses and reorders float32 arithmetic: the losses differ from eager's by ~1e-7 relative (observed).
RTOL = 1e-4


def _config(shards, tmp, compile: bool):
    overrides = tiny_overrides(shards, tmp / "runs", f"sqlite:///{tmp / 'mlflow.db'}", "compile")
    return load_config(None, overrides + ["scaling.num_workers=1", "data.batch_size=8", "seq_jepa.dropout=0.0",
                                          f"train.compile={str(compile).lower()}"])


def _fresh(config):
    loader = build_loader(config, "train", 0, 1)
    loader.set_epoch(0)
    return train_state_for(config, loader, CPU), normalisation(loader, CPU)


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _run(config, folder) -> dict:
    """STEPS steps from a fresh state: the losses, the graphs compiled so far after each step, and a checkpoint
    of the state after SAVED_AFTER steps in `folder`/checkpoint_1."""
    state, normalise = _fresh(config)
    losses, graphs, batches = [], [], iter(state.loader)
    for _ in range(STEPS):
        batch = to_device(next(batches), CPU, *normalise)
        losses.append(float(train_step(state, batch, 1e-3, 0.99, None, False)["train/loss"]))
        graphs.append(_graphs())
        state.step, state.batches_done = state.step + 1, state.batches_done + 1
        if state.step == SAVED_AFTER:
            shutil.move(str(state.save(to_dict(config), world=1, epoch_done=False)), folder / "checkpoint_1")
    return {"state": state, "losses": losses, "graphs": graphs, "checkpoint": folder / "checkpoint_1"}


def _resume(config, checkpoint, steps: int) -> list[float]:
    state, normalise = _fresh(config)
    state.restore(checkpoint, config.train.seed, rank=0, world=1)
    assert state.step == SAVED_AFTER
    losses, batches = [], iter(state.loader)
    for _ in range(steps):
        batch = to_device(next(batches), CPU, *normalise)
        losses.append(float(train_step(state, batch, 1e-3, 0.99, None, False)["train/loss"]))
    return losses


@pytest.fixture(scope="module", autouse=True)
def _mha_fastpath_restored():
    """compile_model turns nn.MultiheadAttention's inference fast path off for the process; other tests get it back."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    yield
    torch.backends.mha.set_fastpath_enabled(enabled)


@pytest.fixture(scope="module")
def runs(fashion_mnist_shards, tmp_path_factory):
    """The same steps eager and compiled, each saving a checkpoint after SAVED_AFTER steps."""
    tmp = tmp_path_factory.mktemp("compile")
    for kind in ("eager", "compiled"):
        (tmp / kind).mkdir()
    eager, compiled = _config(fashion_mnist_shards, tmp, False), _config(fashion_mnist_shards, tmp, True)
    return {"eager_config": eager, "compiled_config": compiled, "eager": _run(eager, tmp / "eager"),
            "compiled": _run(compiled, tmp / "compiled")}


def test_compiled_steps_give_eager_losses(runs):
    eager, compiled = runs["eager"]["losses"], runs["compiled"]["losses"]
    assert all(torch.isfinite(torch.tensor(eager)))
    assert compiled == pytest.approx(eager, rel=RTOL)


def test_every_block_compiles_at_the_first_step_and_nothing_after(runs):
    state = runs["compiled"]["state"]
    units = compiled_units(state.model)
    # online and EMA target encoder blocks (4 each) and the transformer layer (called on two sequence lengths)
    assert len(units) == 9 and any(u in units for u in state.model.target_encoder.modules())
    first, *later = runs["compiled"]["graphs"]
    assert first >= len(units) + 1  # each unit's own graph (the layer: one per sequence length)
    assert later == [first] * (STEPS - 1)  # steps 2..N: the same shapes, no new graph


def test_the_state_dict_keys_are_eager_ones(runs):
    eager, compiled = runs["eager"]["state"], runs["compiled"]["state"]
    assert list(compiled.model.state_dict()) == list(eager.model.state_dict())
    assert not any("_orig_mod" in key for key in compiled.model.state_dict())


@pytest.mark.parametrize("direction", ["compiled to eager", "eager to compiled"])
def test_a_checkpoint_resumes_in_the_other_kind_of_run(runs, direction):
    saved, resumed = ("compiled", "eager") if direction == "compiled to eager" else ("eager", "compiled")
    losses = _resume(runs[f"{resumed}_config"], runs[saved]["checkpoint"], STEPS - SAVED_AFTER)
    uninterrupted = runs[saved]["losses"][SAVED_AFTER:]
    assert losses == pytest.approx(uninterrupted, rel=RTOL)


def test_a_compiled_transformer_layer_validates_in_bf16():
    """Validation: eval mode, no grad, bf16 autocast. nn.TransformerEncoderLayer's fused inference path traced into a
    graph loses autocast's casts (bf16 input, fp32 weights: an error), so compile_model turns it off."""
    torch.manual_seed(0)
    model = SeqJEPA(build_encoder("convnet", in_channels=1, width=4), action_dim=4, action_proj_dim=8, num_layers=1,
                    pred_hidden=16).eval()
    tokens = torch.randn(4, 3, model.token_dim)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        eager = model.aggregator(tokens)
        compile_model(model, None)
        compiled = model.aggregator(tokens)
    # eager took the fast path (its output bf16), the compiled layer the standard one (LayerNorm's output fp32)
    assert torch.allclose(compiled.float(), eager.float(), rtol=0.02, atol=0.02)  # bf16: ~3 significant digits


def test_an_unknown_compile_mode_is_one_line_naming_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.compile=true", "train.compile_mode=fast"])
    assert str(err.value) == ("train.compile_mode must be one of 'default', 'reduce-overhead', 'max-autotune', "
                              "'max-autotune-no-cudagraphs' or null, got 'fast'")
    with pytest.raises(ConfigError, match="^train.compile_mode=max-autotune is read only with train.compile=true"):
        load_config(None, ["train.compile_mode=max-autotune"])


@pytest.mark.gpu
def test_reduce_overhead_replays_cuda_graphs_and_tracks_eager():
    """On CUDA, mode reduce-overhead records each block's CUDA graph at the first step and replays it: the losses
    are eager's within float tolerance, no block is left out of CUDA graphs, nothing compiles after the first step."""
    device = torch.device("cuda")
    overrides = ["model.encoder=convnet", "model.conv_width=8", "model.action_proj_dim=16", "seq_jepa.num_layers=1",
                 "seq_jepa.pred_hidden=64", "seq_jepa.dropout=0.0", "probe.hidden=32"]

    def run(extra: list[str]) -> tuple[list[float], list[int]]:
        config = load_config(None, overrides + extra)
        state = build_train_state(config, device, action_dim=4, channels=3, num_classes=10)
        batch = synthetic_batch(16, config.model.seq_len + 1, 3, 32, 4, 10, device)
        losses, graphs = [], []
        for _ in range(STEPS):
            losses.append(train_step(state, batch, 1e-3, 0.99, None, False)["train/loss"].item())
            graphs.append(_graphs())
        return losses, graphs

    eager, _ = run([])
    skips = counters["inductor"]["cudagraph_skips"]
    compiled, graphs = run(["train.compile=true", "train.compile_mode=reduce-overhead"])
    assert graphs[1:] == [graphs[0]] * (STEPS - 1)  # steps 2..N compiled nothing
    assert counters["inductor"]["cudagraph_skips"] == skips, "a block ran without CUDA graphs (TORCH_LOGS=cudagraphs)"
    assert compiled == pytest.approx(eager, rel=1e-3)
