"""Stage 2 end to end on tiny sizes: run folder, warm-up, resume equality, penalty, weights, CLI."""

import json
import signal

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_cli
from darts_sr.config import ConfigError, SearchConfig, load_config
from darts_sr.io import load_checkpoint
from darts_sr.losses import LossWeights
from darts_sr.nets.discriminator import DiscriminatorGenotype, discriminator_macs, load_discriminator_genotype
from darts_sr.nets.genotype import GeneratorGenotype, GenotypeError, Node, load_generator_genotype, save_genotype
from darts_sr.nets.networks import CHECKPOINT_GENERATOR_KEY, CHECKPOINT_GENOTYPE_KEY, Generator
from darts_sr.run_files import DISCRIMINATOR_SEARCH
from darts_sr.search.discriminator_stage import DiscriminatorSearch
from darts_sr.training.gan import BACKBONE_LABEL
from darts_sr.training.runner import StopRequested, prepare_run_folder, save_config
from operations.discriminator import HEADS

TINY_G = GeneratorGenotype(nodes=(Node("conv_3x3", 0), Node("sep_3x3", 1)), outputs=(2,), channels=4, scale=4)
TINY = {
    "data": {"patch_size": 8, "batch_size": 2, "val_crop": 12},
    "supernet": {"nodes": 2, "channels": 4, "ops": ["conv_3x3", "skip"]},
    "cost": {"target_macs": 2.0e8},
    "loss": {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.005},
    "discriminator": {"base_width": 4},
    "optim": {"epochs": 1, "steps_per_epoch": 2, "warmup_epochs": 0},
    "run": {"log_every": 1, "samples": 1},
    "stage2": {
        "pretrain_steps": 2,
        "blocks": 4,
        "base_widths": [2, 4],
        "norms": ["none", "batch"],
        "epochs": 2,
        "steps_per_epoch": 3,
        "warmup_epochs": 1,
        "generator_lr": 1e-3,
        "arch_lr": 0.05,
        # Two batches per architecture step, two unrolled steps: every draw and every unroll path is exercised
        # (resume equality included). The objective is pixel-only here: a VGG19 takes seconds to build; the tests
        # of the perceptual objective set it themselves.
        "arch_batches": 2,
        "unroll_steps": 2,
        "objective": {"pixel": 1.0, "perceptual": 0.0},
    },
}
# The perceptual objective at a layer 32 x 32 patches can afford (offline: a random-feature VGG19).
PERCEPTUAL_OBJECTIVE = {"pixel": 1.0, "perceptual": 1.0, "perceptual_layer": "conv1_2"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_generator(tmp_path):
    path = tmp_path / "g.json"
    save_genotype(TINY_G, path)
    return path


def _config(tmp_path, generator, **sections) -> SearchConfig:
    data = {k: dict(v) for k, v in TINY.items()}
    data["stage2"]["generator"] = str(generator)
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(SearchConfig, path)


def _search(config, run_dir, resume=False) -> DiscriminatorSearch:
    run_dir = prepare_run_folder(run_dir, resume=False, overwrite=False) if not resume else run_dir
    if not resume:
        save_config(run_dir, {})
    return DiscriminatorSearch(config, run_dir, resume=resume)


def test_stage2_writes_a_self_describing_run_folder(tmp_path, tiny_generator):
    config = _config(tmp_path, tiny_generator, stage2={"objective": PERCEPTUAL_OBJECTIVE})
    summary = _search(config, tmp_path / "run").run()
    run = tmp_path / "run"
    genotype = load_discriminator_genotype(run / "genotype_discriminator.json")
    assert len(genotype.blocks) == 4 and genotype.base_width in (2, 4) and genotype.norm in ("none", "batch")
    assert genotype.head in HEADS
    assert summary["macs"] == discriminator_macs(genotype, 128, 128)
    assert sorted(p.name for p in (run / "history").iterdir()) == [
        "genotype_discriminator_epoch_001.json",
        "genotype_discriminator_epoch_002.json",
    ]
    saved = json.loads((run / "summary_discriminator.json").read_text())
    assert DiscriminatorGenotype.from_dict(saved["genotype"]) == genotype
    assert GeneratorGenotype.from_dict(saved["generator_genotype"]) == TINY_G
    assert saved["generator_val_psnr_pretrained"] is not None and saved["generator_val_psnr"] is not None
    assert saved["d_objective"] == "generator" and saved["steps"] == 2 + 6
    # Which objective steered alpha_D, with which network (offline, without cached weights: random features).
    objective = saved["objective"]
    assert objective["perceptual"] == 1.0 and objective["perceptual_layer"] == "conv1_2"
    assert objective["backbone"] in (BACKBONE_LABEL[True], BACKBONE_LABEL[False])
    if objective["backbone"] == BACKBONE_LABEL[False]:
        assert "RANDOM VGG19" in saved["objective_description"] and "NOT the ImageNet" in saved["objective_description"]
    assert saved["adversarial_weight"] == 0.05 and saved["arch_batches"] == 2 and saved["unroll_steps"] == 2
    # The final probabilities and the largest per choice: ops per block, width, norm, head.
    top, probs = saved["max_probs"], saved["probs"]
    assert len(top["ops"]) == 4 and set(probs) == {"ops", "width", "norm", "head"}
    assert top["width"] == max(probs["width"].values()) and set(probs["head"]) == set(HEADS)
    assert all(1 / 2 <= p <= 1 for p in [*top["ops"], top["width"], top["norm"], top["head"]])
    assert probs["width"][str(genotype.base_width)] == top["width"] and probs["head"][genotype.head] == top["head"]
    signal = saved["hypergradient"]
    assert signal["arch_steps"] == 3 and signal["batches_per_step"] == 2 and 0 <= signal["sign_agreement_mean"] <= 1
    assert signal["snr_median"] > 0 and signal["snr_noise_floor"] == pytest.approx(0.674 / 3**0.5)
    assert set(signal["snr_by_choice"]) == {"ops", "width", "norm", "head"}
    checkpoint = load_checkpoint(run / DISCRIMINATOR_SEARCH.checkpoint)
    assert checkpoint["step"] == 8
    assert {"alpha", "alpha_width", "alpha_norm", "alpha_head"} <= set(checkpoint["supernet"])

    events = EventAccumulator(
        str(run / "tb" / "discriminator"), size_guidance={"images": 0, "scalars": 0, "tensors": 0}
    ).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "loss/pretrain_l_g_pix",
        "loss/l_g_pix",
        "loss/l_g_gan",
        "loss/l_d_real",
        "loss/l_d_fake",
        "loss/arch/l_val_total",
        "loss/arch/val_l_g_pix",
        "loss/arch/val_l_g_percep",
        "grad/objective_norm",
        "grad/sign_agreement",
        "val/psnr_generator",
        "cost/derived_gmacs",
        "lr/generator",
        "lr/arch",
        "prob/block00/conv_3x3",
        "prob/width/2",
        "prob/norm/batch",
        "prob/head/patch",
    } <= scalars
    images = set(events.Tags()["images"])
    assert {"arch/op_probs", "arch/genotype"} <= images
    assert any(tag.startswith("samples/") for tag in images)
    assert "genotype/text_summary" in events.Tags()["tensors"]


def test_architecture_moves_after_warmup_only(tmp_path, tiny_generator):
    search = _search(_config(tmp_path, tiny_generator), tmp_path / "run")
    before = [p.detach().clone() for p in search.supernet.arch_parameters()]
    search.total_steps = 2 + 3  # pretraining and the warm-up epoch
    search.run()
    assert all(torch.equal(a, b) for a, b in zip(before, search.supernet.arch_parameters()))
    search.total_steps = 2 + 6
    search.run()
    assert not torch.equal(before[0], search.supernet.alpha)
    assert not torch.equal(before[1], search.supernet.alpha_width)
    assert not torch.equal(before[3], search.supernet.alpha_head)


@pytest.mark.parametrize("objective", ["generator", "adversarial"])
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, tiny_generator, objective):
    config = _config(tmp_path, tiny_generator, stage2={"d_objective": objective})
    whole = _search(config, tmp_path / "whole")
    whole.run()

    interrupted = _search(config, tmp_path / "cut")
    one_step = interrupted.one_step

    def stop_at_step_seven(*args):
        one_step(*args)
        if interrupted.step == 7:  # mid-epoch, after an architecture step
            interrupted.stop.signum = signal.SIGTERM

    interrupted.one_step = stop_at_step_seven
    with pytest.raises(StopRequested, match="step 7"):
        interrupted.run()
    resumed = _search(config, tmp_path / "cut", resume=True)
    assert resumed.step == 7
    resumed.run()

    for a, b in zip(whole.supernet.arch_parameters(), resumed.supernet.arch_parameters()):
        assert torch.equal(a, b)
    for a, b in zip(whole.generator.parameters(), resumed.generator.parameters()):
        assert torch.equal(a, b)
    name = "genotype_discriminator.json"
    assert (tmp_path / "whole" / name).read_text() == (tmp_path / "cut" / name).read_text()


def test_cost_penalty_lowers_expected_macs(tmp_path, tiny_generator):
    config = _config(
        tmp_path,
        tiny_generator,
        stage2={"penalty": "hinge", "penalty_weight": 1.0, "budget_macs": 1.0e4, "warmup_epochs": 0},
    )
    search = _search(config, tmp_path / "run")
    before = search.supernet.expected_macs().item()
    search.run()
    assert search.supernet.expected_macs().item() < before
    assert search.history[-1]["expected_macs"] < before


def test_generator_weights_replace_pretraining(tmp_path, tiny_generator):
    torch.manual_seed(1)
    model = Generator(TINY_G)
    weights = tmp_path / "g.pt"
    torch.save({CHECKPOINT_GENERATOR_KEY: model.state_dict(), CHECKPOINT_GENOTYPE_KEY: TINY_G.to_dict()}, weights)
    config = _config(tmp_path, tiny_generator, stage2={"generator_weights": str(weights)})
    search = _search(config, tmp_path / "run")
    assert search.pretrain_steps == 0 and search.total_steps == 6
    for a, b in zip(search.generator.parameters(), model.parameters()):
        assert torch.equal(a, b)
    start = search._generator_psnr()  # the loaded weights, before any GAN step
    search.run()
    summary = json.loads((tmp_path / "run" / "summary_discriminator.json").read_text())
    assert summary["generator_val_psnr_pretrained"] == pytest.approx(start)  # where the GAN steps started from
    assert summary["generator_val_psnr"] != pytest.approx(start)


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"stage2": {"adversarial": 0.0}}, r"adversarial weight > 0 \(stage2.adversarial"),
        ({"loss": {"adversarial": 0.0}, "stage2": {"adversarial": None}}, "or loss.adversarial when that is null"),
        ({"stage2": {"ops": ["conv_3x3", "skip"]}}, "stage2: unknown discriminator operation 'skip'"),
        ({"stage2": {"norms": ["batch", "layer"]}}, "stage2: unknown norm 'layer'"),
        ({"stage2": {"heads": ["pool", "dense"]}}, "stage2: unknown head 'dense'"),
        ({"stage2": {"arch_batches": 0}}, "stage2.arch_batches must be at least 1"),
        ({"stage2": {"unroll_steps": 0}}, "stage2.unroll_steps must be at least 1"),
        ({"stage2": {"objective": {"adversarial": 0.1}}}, "stage2.objective.adversarial must be 0"),
        ({"stage2": {"objective": {"pixel": 0.0, "perceptual": 0.0}}}, "stage2.objective: all loss weights are 0"),
        (
            {"stage2": {"objective": {"perceptual": 1.0, "perceptual_layer": "conv9_9"}}},
            "stage2.objective.perceptual_layer: unknown VGG19 layer 'conv9_9'",
        ),
    ],
)
def test_stage2_config_errors_are_config_errors(tmp_path, tiny_generator, sections, message):
    config = _config(tmp_path, tiny_generator, **sections)
    with pytest.raises(ConfigError, match=message):
        _search(config, tmp_path / "run")


def _objective_gradient(search: DiscriminatorSearch, batches) -> torch.Tensor:
    """The architecture gradient of one architecture step on fixed batches, as a flat vector."""
    search.supernet.set_weights_trainable(False)
    search._objective_gradient(*batches, lr_now=1e-3, details={})
    return torch.cat([p.grad.flatten() for p in search.supernet.arch_parameters()])


def test_objective_steers_alpha_with_its_perceptual_term(tmp_path, tiny_generator):
    """The gradient that moves alpha_D contains the perceptual term, with its weight: the hypergradient is linear
    in the objective's weights, so g(w=3) - g(w=0) = 3 (g(w=1) - g(w=0)), and g(w=1) differs from g(w=0)."""
    stage2 = {"objective": PERCEPTUAL_OBJECTIVE, "arch_batches": 1, "unroll_steps": 1}
    search = _search(_config(tmp_path, tiny_generator, stage2=stage2), tmp_path / "run")
    assert search.objective.weights["perceptual"] == 1.0
    assert search.objective_backbone == BACKBONE_LABEL[search.objective.perceptual_pretrained]
    assert search.objective_backbone in search.describe_objective()
    batches = search._draw(search.weight_sampler), search._draw(search.arch_sampler)
    grads = {}
    for weight in (0.0, 1.0, 3.0):
        search.objective.weights = LossWeights(pixel=1.0, perceptual=weight)
        grads[weight] = _objective_gradient(search, batches)
    assert (grads[1.0] - grads[0.0]).norm() > 1e-3 * grads[0.0].norm()
    assert torch.allclose(grads[3.0] - grads[0.0], 3 * (grads[1.0] - grads[0.0]), rtol=1e-3, atol=1e-12)


def _main_in_process(*args) -> int:
    """train_search.main without a subprocess; the file log handler a run adds is removed afterwards."""
    import logging

    import train_search

    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        return train_search.main([str(a) for a in args])
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
            handler.close()


def test_cli_stage_all_writes_both_genotypes(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    result = run_cli("train_search.py", "--stage", "all", "--config", cfg, "--out", out, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    generator = load_generator_genotype(out / "genotype_generator.json")
    assert load_discriminator_genotype(out / "genotype_discriminator.json").base_width in (2, 4)
    summary = json.loads((out / "summary_discriminator.json").read_text())
    assert GeneratorGenotype.from_dict(summary["generator_genotype"]) == generator  # searched against stage 1's
    assert (out / "summary.json").is_file() and (out / "checkpoints" / "last.pt").is_file()
    assert (out / DISCRIMINATOR_SEARCH.checkpoint).is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["stage2"]["generator"] is None
    # A finished run resumes to the same end without redoing either stage.
    before = (out / DISCRIMINATOR_SEARCH.checkpoint).stat().st_mtime_ns
    assert _main_in_process("--stage", "all", "--out", out, "--resume") == 0
    assert (out / DISCRIMINATOR_SEARCH.checkpoint).stat().st_mtime_ns == before
    assert load_discriminator_genotype(out / "genotype_discriminator.json") == load_discriminator_genotype(
        out / "history" / "genotype_discriminator_epoch_002.json"
    )


def test_cli_stage_arguments_are_checked(tmp_path, tiny_generator, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert _main_in_process("--stage", "discriminator", "--config", cfg, "--out", tmp_path / "a") == 2
    assert "--stage discriminator needs --generator" in capsys.readouterr().err
    args = ("--stage", "all", "--generator", tiny_generator, "--config", cfg, "--out", tmp_path / "b")
    assert _main_in_process(*args) == 2
    assert "drop --generator" in capsys.readouterr().err
    assert _main_in_process("--generator", tiny_generator, "--config", cfg, "--out", tmp_path / "c") == 2
    assert "are for --stage discriminator" in capsys.readouterr().err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.yaml").write_text(yaml.safe_dump(TINY | {"stage2": {"generator": str(tiny_generator)}}))
    assert _main_in_process("--stage", "discriminator", "--resume", "--out", tmp_path / "d") == 2
    assert "nothing to resume (no checkpoints/discriminator_last.pt)" in capsys.readouterr().err


def test_missing_generator_genotype_is_named(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(GenotypeError, match=f"{missing}: cannot read genotype"):
        _search(_config(tmp_path, missing), tmp_path / "run")
