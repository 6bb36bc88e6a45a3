"""Reports of result documents for people away from the terminal: `html` (one self-contained file,
inline SVG charts from `svg`) and `latex` (a booktabs table)."""
