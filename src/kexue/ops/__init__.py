"""Pure tensor math: no module state, no I/O, no training code."""
