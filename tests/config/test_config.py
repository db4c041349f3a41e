import pytest

from constrained_fairness.config import DEFAULT_CONFIG, ExperimentConfig, from_dict, load_config
from constrained_fairness.errors import ConfigError


def test_bundled_default_config_loads():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.data.name == "adult"
    assert cfg.methods == ["nft", "nft_es", "el", "ceag"]


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'finetune.lrr'; did you mean 'finetune.lr'"):
        from_dict(ExperimentConfig, {"finetune": {"lrr": 0.1}})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"'pruning.epochs' must be of type int"):
        from_dict(ExperimentConfig, {"pruning": {"epochs": "many"}})


def test_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    cfg = load_config(path, ["finetune.lr=0.5", "methods=[nft, ceag]", "ceag.dual.optimizer=nupi"])
    assert cfg.finetune.lr == 0.5 and cfg.methods == ["nft", "ceag"] and cfg.ceag.dual.optimizer == "nupi"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pruning.sparsity=1.0", "pruning.sparsity must lie in"),
        ("pruning.sparsity=-0.1", "pruning.sparsity must lie in"),
        ("ceag.tolerance=-0.01", "ceag.tolerance must be >= 0"),
        ("ceag.buffer_size=0", "ceag.buffer_size must be >= 1"),
        ("methods=[nft, magic]", "unknown method 'magic'"),
    ],
)
def test_validation_errors(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, [override])


def test_yaml_syntax_error_is_a_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [x\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_config(path)


def test_exponent_floats_written_as_yaml_1_1_strings_are_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ceag: {dual: {lr: 1e-4}}\n")
    assert load_config(path, ["finetune.lr=1e-2"]).ceag.dual.lr == 1e-4
    assert load_config(path, ["finetune.lr=1e-2"]).finetune.lr == 1e-2
