"""kexue: ideas from Su Jianlin's blog *Scientific Spaces* (kexue.fm) as tested, fast PyTorch code.

The package is layered (lower never imports higher)::

    ops  <-  nn  <-  models        pure tensor math, layers, networks
    losses                          objectives, separate from networks
    data                            offline data sets (fetched from package registries)
    train                           training tools: seeding, EMA, capture, checkpoints
    eval                            metrics, figures, run reports
    experiments, cli                recipes that reproduce each post, and the command line

Importing ``kexue`` is light: it never imports matplotlib or the experiments.
"""

from kexue.errors import KexueError

__version__ = "0.1.0"
__all__ = ["KexueError", "__version__"]
