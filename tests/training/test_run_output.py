"""What a run shows a person: log lines beside (not glued onto) the progress bar, SR samples in retraining's
TensorBoard."""

import logging
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from darts_sr.config import RunConfig, TrainConfig, from_dict
from darts_sr.nets.discriminator import SRGAN_DISCRIMINATOR
from darts_sr.nets.genotype import GeneratorGenotype, Node
from darts_sr.run_files import RETRAIN
from darts_sr.training.retrain import Retrainer
from darts_sr.training.runner import Run, prepare_run_folder

SMALL = GeneratorGenotype((Node("conv_3x3", 0),), (1,), channels=4, scale=4)


class Chatty(Run):
    """A stage whose every step logs a line, as validation does."""

    kind, files, label = "retrain", RETRAIN, "chatty"

    def __init__(self, run_dir):
        super().__init__(RunConfig(), run_dir, RunConfig())
        self.total_steps = 3

    def one_step(self, writer):
        self.step += 1
        logging.getLogger("chatty").info("said at step %d", self.step)
        return {}

    def stage_state(self):
        return {}

    def load_stage_state(self, state):
        pass

    def stage_summary(self):
        return {}


def test_log_lines_are_not_glued_onto_the_progress_bar(tmp_path, capsys):
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)  # what cli.setup_logging installs
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        Chatty(tmp_path).run()
    finally:
        root.removeHandler(console)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "chatty: " in err  # the bar was drawn
    for step in (1, 2, 3):
        # tqdm.write clears the bar's line first: each log line starts a line of its own
        (line,) = [seg for seg in err.replace("\r", "\n").split("\n") if f"said at step {step}" in seg]
        assert line == f"INFO chatty: said at step {step}", repr(line)


def test_retraining_logs_sr_samples(tmp_path):
    config = from_dict(
        TrainConfig,
        {
            "data": {"patch_size": 8, "batch_size": 2, "val_crop": 12},
            "pixel_phase": {"steps": 2, "lr": 1e-3},
            "val_every": 1,
            "run": {"samples": 1},
        },
    )
    run_dir = prepare_run_folder(tmp_path / "run", False, False)
    Retrainer(config, SMALL, SRGAN_DISCRIMINATOR, run_dir).run()
    events = EventAccumulator(str(run_dir / RETRAIN.tensorboard), size_guidance={"images": 0}).Reload()
    (tag,) = [t for t in events.Tags()["images"] if t.startswith("samples/")]
    assert tag == "samples/ihc"  # the built-in val split's image, SR beside HR
    assert [e.step for e in events.Images(tag)] == [1, 2]
    assert events.Images(tag)[0].width == 2 * events.Images(tag)[0].height  # SR beside HR, 12*4 each
