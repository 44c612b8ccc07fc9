"""FlyVec (post 8): binary sparse word embeddings learned by the fruit-fly rule, in plain torch.

- :mod:`~kexue.models.flyvec.text`: tokenisation, vocabulary, sparse window encoding.
- :mod:`~kexue.models.flyvec.rule`: the winner-take-all Hebbian update in torch (sparse path, dense twin, GPU).
- :mod:`~kexue.models.flyvec.fast`: the same update as compiled CPU kernels (numba), the default CPU trainer.
- :mod:`~kexue.models.flyvec.model`: :class:`FlyVec` (fit, static / dynamic hashes, neighbours, save / load).
- :mod:`~kexue.models.flyvec.baselines`: gensim word2vec on the same tokens, SimHash and FlyHash of its vectors.
"""

from kexue.models.flyvec.model import FlyVec, codes_to_numpy, memory_bits
from kexue.models.flyvec.rule import (
    ColumnMax,
    apply_delta,
    energy_terms,
    hebbian_delta,
    hebbian_step_,
    hebbian_step_reference,
    window_winners,
)
from kexue.models.flyvec.text import (
    NUM,
    STOP,
    STOP_WORDS,
    UNK,
    EncodedCorpus,
    UnknownWordError,
    Vocabulary,
    normalize_token,
    tokenize,
    window_dense,
    window_indices,
)

__all__ = [
    "NUM",
    "STOP",
    "STOP_WORDS",
    "UNK",
    "ColumnMax",
    "EncodedCorpus",
    "FlyVec",
    "UnknownWordError",
    "Vocabulary",
    "apply_delta",
    "codes_to_numpy",
    "energy_terms",
    "hebbian_delta",
    "hebbian_step_",
    "hebbian_step_reference",
    "memory_bits",
    "normalize_token",
    "tokenize",
    "window_dense",
    "window_indices",
    "window_winners",
]
