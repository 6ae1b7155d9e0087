"""The config schema: YAML + dotted overrides, validated with messages that name the key."""

from __future__ import annotations

import pytest

from trainer.config import DEFAULT_CONFIG_PATH, Config, config_from_dict, flatten, load_config, params_of, to_dict
from trainer.errors import ConfigError


def test_default_config_loads_and_round_trips():
    config = load_config()
    assert config.model.encoder == "convnet" and config.scaling.parallelism == "fsdp2"
    assert config_from_dict(to_dict(config)) == config


def test_overrides_are_typed_and_nested(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  seq_len: 2\n")
    config = load_config(path, ["model.seq_len=5", "optim.grad_clip=1", "model.eval_seq_len=null",
                                "scaling.parallelism=ddp", "seq_jepa.action_cond=false"])
    assert config.model.seq_len == 5 and config.optim.grad_clip == 1.0 and config.model.eval_seq_len is None
    assert config.scaling.parallelism == "ddp" and config.method.action_cond is False
    assert config.eval_seq_len == 5


def test_scientific_notation_is_a_float(tmp_path):
    # YAML 1.1 reads `2e-3` (no dot) as a string; a float field must still take it, from a file or an override.
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 5e-4\n")
    assert load_config(path).optim.lr == 5e-4
    assert load_config(None, ["optim.lr=2e-3"]).optim.lr == 2e-3
    with pytest.raises(ConfigError, match="optim.lr must be float"):
        load_config(None, ["optim.lr=fast"])


def test_eval_seq_len_can_differ_from_training():
    assert load_config(None, ["model.seq_len=1", "model.eval_seq_len=4"]).eval_seq_len == 4


@pytest.mark.parametrize("override, message", [
    ("model.seq_len=0", "model.seq_len (M) must be >= 1"),
    ("model.eval_seq_len=0", "model.eval_seq_len must be >= 1"),
    ("seq_jepa.dropout=1.5", "seq_jepa.dropout must be in [0, 1)"),
    ("seq_jepa.action_cond=maybe", "seq_jepa.action_cond must be bool"),
    ("train.epochs=1.5", "train.epochs must be int"),
    ("optim.lr=inf", "optim.lr must be float"),
    ("optim.name=sgd", "optim.name must be one of 'adamw', 'adam'"),
    ("data.val_batch_size=7", "data.val_batch_size=7 is not divisible by scaling.num_workers=2"),
    ("model=3", "'model' must be a mapping"),
    ("model.seq_len.x=3", "cannot set 'model.seq_len.x'"),
    ("eval.seq_lens=3", "eval.seq_lens must be a list of int (e.g. [1, 2, 4]), got 3"),
    ("eval.seq_lens=[1, x]", "eval.seq_lens[1] must be int, got 'x'"),
    ("eval.seq_lens=[0, 2]", "eval.seq_lens must be a non-empty list of lengths >= 1"),
    ("eval.seq_lens=[]", "eval.seq_lens must be a non-empty list of lengths >= 1"),
    ("eval.seq_lens=[2, 2]", "eval.seq_lens has repeats"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_config(None, [override])


def test_eval_seq_lens_is_a_list_of_inference_lengths():
    assert Config().eval.seq_lens == [1, 2, 3, 4, 5, 6, 7, 8]
    assert load_config().eval.seq_lens == [1, 2, 3, 4, 5, 6]  # the embedded default
    assert load_config(None, ["eval.seq_lens=[1, 4, 8]"]).eval.seq_lens == [1, 4, 8]
    assert flatten(to_dict(load_config()))["eval.seq_lens"] == [1, 2, 3, 4, 5, 6]


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'optim.weight_decay'"):
        load_config(None, ["optim.weightdecay=0.1"])


def test_invalid_yaml_file_is_clear(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path)


def test_flatten_gives_dotted_params():
    flat = flatten(to_dict(Config()))
    assert flat["model.seq_len"] == 3 and flat["scaling.parallelism"] == "fsdp2"
    assert all(not isinstance(v, dict) for v in flat.values())


def test_resampling_needs_a_fixed_epoch_length():
    with pytest.raises(ConfigError, match="data.resample=true needs train.steps_per_epoch"):
        load_config(None, ["data.resample=true", "train.steps_per_epoch=null"])
    assert load_config(None, ["data.resample=true", "train.steps_per_epoch=10"]).data.resample


def test_only_stl10_has_an_unlabeled_split_to_train_on():
    with pytest.raises(ConfigError, match="data.train_split=unlabeled exists for stl10 only"):
        load_config(None, ["data.train_split=unlabeled"])
    assert load_config(None, ["data.dataset=stl10", "data.train_split=unlabeled"]).data.train_split == "unlabeled"


@pytest.mark.parametrize("name", ["3diebench", "cifar100", "tinyimagenet", "stl10_pls"])
def test_the_paper_recipes_load_and_name_their_dataset(name):
    path = DEFAULT_CONFIG_PATH.parent / f"{name}.yaml"
    config = load_config(path)
    assert config.data.dataset == name.split("_")[0] and config.model.encoder == "resnet18"
    assert config.scaling.use_gpu and config.method.num_layers == 3 and config.method.num_heads == 4


def test_a_recipe_extends_another_and_changes_single_fields(tmp_path):
    (tmp_path / "narrow.yaml").write_text("extends: default\nmodel: {conv_width: 8}\ntrain: {epochs: 8}\n")
    (tmp_path / "narrower.yaml").write_text("extends: narrow.yaml\nmodel: {conv_width: 4}\n")
    default, config = load_config(None), load_config(tmp_path / "narrower.yaml")
    assert (config.model.conv_width, config.train.epochs) == (4, 8)  # the child's value, the parent's value
    assert config.model.seq_len == default.model.seq_len  # a sibling field in the same section: the default's
    assert config.data.dataset == default.data.dataset  # a section the children never name
    assert load_config(tmp_path / "narrower.yaml", ["model.conv_width=16"]).model.conv_width == 16


def test_a_recipe_that_extends_itself_or_a_missing_file_is_one_clear_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="config file .*a.yaml extends itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: no_such_recipe\n")
    with pytest.raises(ConfigError, match="config file not found: .*no_such_recipe.yaml"):
        load_config(tmp_path / "c.yaml")


def test_each_method_has_its_own_section_and_the_params_hold_the_chosen_ones():
    config = load_config(None, ["model.method=simclr", "simclr.temperature=0.2"])
    assert config.method.temperature == 0.2 and config.methods["seq_jepa"].num_layers == 2  # the recipe's, unread
    params = params_of(config)
    assert params["simclr.temperature"] == 0.2 and params["model.method"] == "simclr"
    assert not any(key.startswith("seq_jepa.") for key in params)  # only the chosen method's section is logged
    assert config_from_dict(to_dict(config)) == config


def test_an_override_the_chosen_method_does_not_read_names_who_reads_it():
    with pytest.raises(ConfigError, match="^seq_jepa.action_cond is a setting of method seq_jepa, but "
                                          "model.method=simclr; drop it or set model.method=seq_jepa$"):
        load_config(None, ["model.method=simclr", "seq_jepa.action_cond=false"])
    with pytest.raises(ConfigError, match=r"^ema.decay is read by the methods with an EMA target \(seq_jepa, byol, "
                                          r"cond_byol\); model.method=vicreg has none: drop it$"):
        load_config(None, ["model.method=vicreg", "ema.decay=0.9"])
    with pytest.raises(ConfigError, match="^ema.enabled is read by seq_jepa only: model.method=byol always keeps its "
                                          "EMA target; drop it$"):
        load_config(None, ["model.method=byol", "ema.enabled=false"])
    assert load_config(None, ["model.method=byol", "ema.decay=0.99"]).ema.decay == 0.99


def test_a_config_file_may_hold_the_settings_of_several_methods(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("extends: default\nsimclr: {temperature: 0.1}\nvicreg: {inv_coeff: 10}\n")
    assert load_config(path).method.num_layers == 2  # seq_jepa runs, the others' sections wait
    assert load_config(path, ["model.method=vicreg"]).method.inv_coeff == 10.0
    path.write_text("extends: default\nsimclr: {temperature: 0}\n")  # checked even when not chosen
    with pytest.raises(ConfigError, match="^simclr.temperature must be > 0, got 0"):
        load_config(path)


def test_a_moved_key_keeps_working_under_its_old_name_with_a_notice(tmp_path, capsys):
    from trainer.config import legacy

    legacy._noticed.clear()
    config = load_config(None, ["model.action_cond=false", "faults.exit_at_step=3"])
    assert config.method.action_cond is False and config.debug.exit_at_step == 3
    err = capsys.readouterr().err.splitlines()
    assert "notice: config key 'model.action_cond' is now 'seq_jepa.action_cond'; the old name is read until " \
           "version 0.2" in err
    path = tmp_path / "old.yaml"
    path.write_text("extends: default\nmodel: {method: simclr}\nmethod: {temperature: 0.3, traj_alpha: 2}\n")
    assert load_config(path).method.temperature == 0.3  # the old shared section: the chosen method's part
    assert "simclr.temperature" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="method.traj_alpha is not a setting of model.method=simclr"):
        load_config(None, ["model.method=simclr", "method.traj_alpha=2"])


def test_an_unknown_section_lists_the_sections_methods_included():
    with pytest.raises(ConfigError, match=r"unknown config section 'seqjepa'; did you mean 'seq_jepa'\? \(sections: "
                                          r"data, model, .*, debug, seq_jepa, simclr, "):
        load_config(None, ["seqjepa.num_layers=1"])
