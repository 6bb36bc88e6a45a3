"""Command-line options, each declared once as a dataclass field (docs/reference.md, "Adding an option").

`schema.py` turns such fields into Typer parameters, YAML config keys and Python keywords. The
schemas of the families whose packages import torch (models, training, corrupt) live here, so that
`qact --help` and usage errors never import torch; `eval/options.py` and `compare/options.py` hold
the evaluation and comparison schemas.
"""
