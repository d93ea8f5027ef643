"""One run's training: the ``transformers.Trainer`` subclass (``trainer``) and the steps of a run
wired together, from data to a ready trainer (``pipeline``)."""
