"""rnnlab: recurrent neural networks as pure JAX functions."""

__version__ = "0.1.0"
