"""qact: robustness evaluation of image classifiers, built around the Quantile Activation."""

__version__ = "0.1.0"
