"""Flax (linen) models built on `rnnlab.nn.RecurrentStack`, one file per model family.

Every model subclasses `Backbone`, so they share the backbone fields (cell, depth, direction,
regularisation, attention) and differ only in their task fields. Build them with keyword
arguments: `SequenceClassifier(cell=LSTMCell(128), num_outputs=2, vocab_size=20_000)`.
"""

from rnnlab.models.classifier import SequenceClassifier, SequenceTagger
from rnnlab.models.common import ATTENTION_KINDS, Backbone, count_params
from rnnlab.models.language_model import LanguageModel, generate, sample_logits
from rnnlab.models.seq2seq import Memory, Seq2Seq, greedy_decode

__all__ = [
    "ATTENTION_KINDS",
    "Backbone",
    "LanguageModel",
    "Memory",
    "Seq2Seq",
    "SequenceClassifier",
    "SequenceTagger",
    "count_params",
    "generate",
    "greedy_decode",
    "sample_logits",
]
