"""Typed config: unknown keys and wrong types are errors; nested defaults survive partial overrides."""

import pytest

from darts_sr.config import ConfigError, SearchConfig, TrainConfig, load_config, to_dict


def test_presets_load():
    for preset in ("configs/demo.yaml", "configs/div2k_x4.yaml", "configs/search_cpu.yaml", "configs/race_cpu.yaml"):
        assert isinstance(load_config(SearchConfig, preset), SearchConfig)
    for preset in (
        "configs/train_demo.yaml",
        "configs/compare_cpu.yaml",
        "configs/compare_cpu_short.yaml",
        "configs/compare_cpu_realistic.yaml",
        "configs/compare_div2k.yaml",
    ):
        assert isinstance(load_config(TrainConfig, preset), TrainConfig)


def test_cpu_stage2_presets_share_one_space():
    # discriminator_compare sets the supernet's pick (search_cpu) against the race's (race_cpu) and random ones drawn
    # from their space, and refuses runs whose spaces differ.
    from darts_sr.search.race import search_space

    supernet = search_space(load_config(SearchConfig, "configs/search_cpu.yaml"))
    assert supernet == search_space(load_config(SearchConfig, "configs/race_cpu.yaml"))
    assert supernet["base_widths"] == (8, 16, 32) and len(supernet["norms"]) == 3 and len(supernet["heads"]) == 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.epoch=3", "unknown key(s) ['epoch']"),
        ("optimiser.epochs=3", "unknown key(s) ['optimiser']"),
        ("optim.epochs=3.5", "optim.epochs: expected an integer"),
        ("optim.epochs=true", "optim.epochs: expected an integer"),
        ("optim.order=third", "not one of ['first', 'second']"),
        ("data.train=builtin", "data.train: expected a list"),
        ("cost.penalty=linear", "cost.penalty"),
        ("loss.allow_random_backbone=yes please", "expected true or false"),
        ("noequals", "expected key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(SearchConfig, None, [override])
    assert message in str(info.value)


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  steps_per_epok: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.optim: unknown key"):
        load_config(SearchConfig, bad)
    bad.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(SearchConfig, bad)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(SearchConfig, tmp_path / "missing.yaml")


def test_values_parse_and_round_trip():
    c = load_config(SearchConfig, None, ["cost.target_macs=2e9", "supernet.input_window=3", "data.train=[a, b]"])
    assert c.cost.target_macs == 2e9 and c.supernet.input_window == 3 and c.data.train == ("a", "b")
    again = load_config(SearchConfig, None, [])
    assert to_dict(again) == to_dict(SearchConfig())


def test_nested_defaults_survive_partial_overrides():
    c = load_config(TrainConfig, None, ["gan_phase.steps=3", "pixel_phase.loss.pixel=0.5"])
    assert c.gan_phase.steps == 3 and c.gan_phase.lr == 1e-4 and c.gan_phase.loss.perceptual == 1.0
    assert c.pixel_phase.loss.pixel == 0.5 and c.pixel_phase.loss.perceptual == 0.0
