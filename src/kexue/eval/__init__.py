"""Evaluation: metrics, figures and run reports."""
