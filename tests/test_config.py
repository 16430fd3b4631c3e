from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ALL_CONFIGS, MATRIX_CONFIGS, RUN_CONFIGS
from pydantic import ValidationError

from trainer_core.config import RunConfig, parse_override
from trainer_core.errors import ConfigError
from trainer_core.loading import load_config


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=[p.name for p in ALL_CONFIGS])
def test_each_config_is_exactly_one_kind(path: Path) -> None:
    # A shipped YAML is a training config or a matrix: it must validate under exactly the schema its
    # folder classification says, and be rejected by the other one (not merely be counted).
    from bench.matrix import MatrixSpec
    from trainer_core.config import read_yaml

    raw = read_yaml(path)
    as_run = RunConfig.model_validate(raw) if path in RUN_CONFIGS else None
    as_matrix = MatrixSpec.model_validate(raw) if path in MATRIX_CONFIGS else None
    assert (as_run is None) != (as_matrix is None)
    other = MatrixSpec if as_run is not None else RunConfig
    with pytest.raises(ValidationError):
        other.model_validate(raw)


def test_configs_folder_holds_both_kinds() -> None:
    assert len(RUN_CONFIGS) >= 4 and len(MATRIX_CONFIGS) >= 3


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=[p.name for p in ALL_CONFIGS])
def test_every_shipped_yaml_parses(path: Path) -> None:
    if path in MATRIX_CONFIGS:
        from bench.matrix import expand, load_matrix

        assert expand(load_matrix(path), source=str(path))
    else:
        cfg = load_config(path)
        assert isinstance(cfg, RunConfig)
        assert cfg.name


def test_precedence_cli_over_yaml_over_defaults(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("optim: {lr: 0.5}\ndata: {batch_size: 7}\n")
    cfg = load_config(f, ["optim.lr=3e-4"])
    assert cfg.optim.lr == pytest.approx(3e-4)  # CLI beats YAML
    assert cfg.data.batch_size == 7  # YAML beats default
    assert cfg.optim.weight_decay == 0.0  # default


def test_override_values_are_typed() -> None:
    assert parse_override("a.b=3e-4") == ("a.b", 3e-4)
    assert parse_override("x=true") == ("x", True)
    assert parse_override("x=[1, 2]") == ("x", [1, 2])
    assert parse_override("x=hello") == ("x", "hello")


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "expected"),
    [
        ("optim: {lrr: 1}\n", [], "optim.lrr: unknown key"),
        ("data: {batch_size: 0}\n", [], "data.batch_size: Input should be greater than or equal to 1"),
        ("data: {batch_size: abc}\n", [], "data.batch_size: Input should be a valid integer"),
        ("precision: fp8\n", [], "precision: unknown precision 'fp8'"),
        ("device: tpu\n", [], "device: device 'tpu' is not one of"),
        ("optim: {lr: -1}\n", [], "optim.lr: Input should be greater than 0"),
        ("{}\n", ["optim.lr=0"], "optim.lr (from --set): Input should be greater than 0"),
        ("data: {name: cifar}\n", [], "data.name: unknown dataset 'cifar'"),
        ("data: {persistent_workers: true}\n", [], "persistent_workers=true needs num_workers > 0"),
        ("bogus_section: {}\n", [], "bogus_section: unknown key"),
    ],
)
def test_bad_input_names_file_and_key(tmp_path: Path, yaml_text: str, overrides: list[str], expected: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(f, overrides)
    msg = str(info.value)
    assert msg.startswith(str(f) + ": ")
    assert expected in msg
    assert "\n" not in msg


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    f = tmp_path / "broken.yaml"
    f.write_text("optim: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line"):
        load_config(f)
    f.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(f)


def test_override_into_a_value_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("precision: bf16\n")
    with pytest.raises(ConfigError, match="'precision' is a value, not a section"):
        load_config(f, ["precision.x=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["optim.lr"])


def test_every_field_has_a_description() -> None:
    from pydantic import BaseModel

    def walk(model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann)

    walk(RunConfig)


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=[p.name for p in ALL_CONFIGS])
def test_no_shipped_config_downloads_data(path: Path) -> None:
    # Nothing downloads at run time: every shipped config and every cell of every shipped matrix reads its
    # data from disk or generates it (data.download, torchvision's download, stays off).
    from bench.matrix import expand, load_matrix

    configs = [c.config for c in expand(load_matrix(path), source=str(path))] if path in MATRIX_CONFIGS else [
        load_config(path)
    ]  # fmt: skip
    assert configs and not [c.name for c in configs if c.data.download]
