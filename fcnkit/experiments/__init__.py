"""Reproducible studies (``fcnkit experiment NAME --out DIR``): each writes results.json, PNG plots
and summary.md. See :mod:`fcnkit.experiments.registry` for the list and the common options."""

from fcnkit.experiments.registry import EXPERIMENTS, list_experiments, run_experiment

__all__ = ["EXPERIMENTS", "list_experiments", "run_experiment"]
