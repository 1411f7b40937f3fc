"""TrainConfig checks itself; YAML, JSON and TOML files map onto it; mistakes name the field."""

import json
from dataclasses import fields

import pytest

from trainers.config import ConfigError, TrainConfig, field_help, load_config, parse_assignment


def test_defaults_are_valid_and_every_field_has_a_help_line():
    cfg = TrainConfig()
    assert cfg.method == "lora" and cfg.learning_rate == 2e-4 and cfg.targets == "all-linear"
    helps = field_help()
    assert set(helps) == {f.name for f in fields(TrainConfig)}
    assert all(h and "\n" not in h for h in helps.values())


@pytest.mark.parametrize("values, words", [
    ({"lora_rank": 0}, "lora_rank: 0 must be at least 1"),
    ({"lora_rank": "eight"}, "lora_rank: 'eight' is not a whole number"),
    ({"learning_rate": -1}, "learning_rate"),
    ({"learning_rate": 3}, "learning_rate: 3.0 is outside (0, 1]"),
    ({"method": "full"}, "method: 'full' is not known; expected one of lora, dora, qlora"),
    ({"lr_schedule": "cosin"}, "lr_schedule: 'cosin'"),
    ({"lora_dropout": 1.5}, "lora_dropout: 1.5 must be in [0, 1)"),
    ({"batch_tokens": 256, "max_seq_len": 512}, "batch_tokens: 256 is smaller than max_seq_len (512)"),
    ({"epochs": 0, "max_steps": 0}, "set one of them"),
    ({"tiny_width": 100, "tiny_heads": 3}, "tiny_heads: 3 does not divide tiny_width 100"),
    ({"packing": "yes"}, "packing: 'yes' is not true or false"),
    ({"val_fraction": 1.0}, "val_fraction"),
])
def test_malformed_values_are_refused_with_the_field_named(values, words):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**values)
    assert words in str(err.value)


def test_whole_numbers_and_ints_are_coerced():
    cfg = TrainConfig(learning_rate=1, lora_rank=8.0)
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)
    assert cfg.lora_rank == 8 and isinstance(cfg.lora_rank, int)
    assert TrainConfig(target_modules="q_proj, v_proj").targets == ["q_proj", "v_proj"]
    assert TrainConfig(method="prompt-tuning").packing is False


@pytest.mark.parametrize("suffix, text", [
    (".yaml", "lora_rank: 8\nlearning_rate: 1.0e-3\nmethod: dora\npacking: false\n"),
    (".json", json.dumps({"lora_rank": 8, "learning_rate": 1e-3, "method": "dora", "packing": False})),
    (".toml", "lora_rank = 8\nlearning_rate = 1e-3\nmethod = \"dora\"\npacking = false\n"),
])
def test_files_map_onto_the_dataclass(tmp_path, suffix, text):
    path = tmp_path / f"train{suffix}"
    path.write_text(text)
    cfg = load_config(path, max_steps=5)
    assert (cfg.lora_rank, cfg.learning_rate, cfg.method, cfg.packing, cfg.max_steps) == (8, 1e-3, "dora", False, 5)


def test_file_mistakes_name_the_key(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lora_rnak: 8\n")
    with pytest.raises(ConfigError, match="unknown key 'lora_rnak'; did you mean 'lora_rank'"):
        load_config(path)
    path.write_text("lora_rank: [8\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)
    bad = tmp_path / "train.ini"
    bad.write_text("x")
    with pytest.raises(ConfigError, match="use .yaml, .json or .toml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_command_line_assignments():
    assert parse_assignment("lora_rank=8") == ("lora_rank", 8)
    assert parse_assignment("target_modules=q_proj,v_proj") == ("target_modules", "q_proj,v_proj")
    assert parse_assignment("packing=false") == ("packing", False)
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_assignment("lora_rank")
