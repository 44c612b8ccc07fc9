"""Experiments: one recipe per claim of a post, registered by name (see :mod:`kexue.experiments.registry`)."""

from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import POSTS, Experiment, experiments, get
from kexue.experiments.rundir import Run
from kexue.experiments.runner import run_experiment

__all__ = ["POSTS", "Experiment", "ExperimentConfig", "Run", "experiments", "get", "param", "run_experiment"]
