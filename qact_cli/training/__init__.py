"""Training: the end-to-end loop and the probes fitted on frozen backbones (probe.py)."""
