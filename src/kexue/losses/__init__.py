"""Objectives as small functions, kept apart from the networks they train."""
