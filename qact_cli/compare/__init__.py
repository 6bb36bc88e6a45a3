"""`qact compare`: models side by side (rich table, Markdown, plot, JSON) and config-driven experiments.

Modules: `table` (the comparison grid and its renderings), `plot` (accuracy/ECE-vs-severity
curves), `items` (result JSONs and checkpoints given on the command line), `experiment` (train →
eval → compare from a YAML file; the bundled `quickstart.yaml`). This file stays import-light: the
CLI imports `keys` at start-up to register the config keys.
"""
