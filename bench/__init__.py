"""recbench: one split, one evaluator, many recommenders."""

__version__ = "0.1.0"
