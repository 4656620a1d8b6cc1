"""Training a network: the run skeleton every stage shares (``runner.Run``), retraining (pixel then GAN phase),
BasicSR's GAN step, the loss table, schedules, TensorBoard writing, and trials (``trials.Trial``: one training,
the unit of every experiment, with its identity and record). Uses ``nets`` and ``evaluation``."""
