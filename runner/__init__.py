"""ccrun: train and evaluate code language models from declarative recipes."""

__version__ = "0.1.0"
