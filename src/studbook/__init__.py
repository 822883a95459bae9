"""studbook: a git-native, declarative model repository for breeding language models."""

__version__ = "0.1.0"
