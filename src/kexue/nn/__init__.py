"""Reusable layers and initialisation (built on :mod:`kexue.ops`)."""
