"""The ground floor: a run folder (its files, written atomically, and its lock), the names of
the metrics it records (`metric_names`: their titles and families too), a run's before/after
numbers (`summary`) and loading a policy it saved (`saved_policy`).
Training, evaluation, pretraining, reports and model cards all import from here; this package
imports from none of them."""

from bayesalign.runs.folder import RunFolder, RunFolderError, RunFolderWarning

__all__ = ["RunFolder", "RunFolderError", "RunFolderWarning"]
