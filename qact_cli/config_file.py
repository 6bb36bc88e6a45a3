"""`--config FILE.yaml` for every command: keys are long option names (`batch-size` or `batch_size`).

Precedence: command line > config file > defaults. The file's values become Click's `default_map`
for the command, so a flag given on the command line still wins. Unknown keys are a usage error
(exit 2) naming the key.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .suggest import did_you_mean

# keys a command's config may hold beyond its options (e.g. compare's experiment description)
EXTRA_KEYS: dict[str, set[str]] = {}


def read_yaml(path: Path) -> dict:
    import yaml  # on first use: `--help` and usage errors answer without it

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise typer.BadParameter(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise typer.BadParameter(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise typer.BadParameter(f"{path} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} must be a mapping of option names to values")
    return data


def _coerce(value):
    """YAML lists for comma-separated options (`severities: [0, 1, 2]`) become '0,1,2'."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(str(v) for v in value)
    return value


def config_callback(ctx: typer.Context, param: typer.CallbackParam, value: Path | None):
    if value is None:
        return value
    data = read_yaml(Path(value))
    params = {p.name: p for p in ctx.command.params if p.name and p.name != "config"}
    # a key may also be the option's flag (`json` for --json, stored as json_out)
    aliases = {o.lstrip("-").replace("-", "_"): p.name for p in params.values() for o in getattr(p, "opts", [])
               if o.startswith("--")}
    extra = EXTRA_KEYS.get(ctx.command.name or "", set())
    defaults, extras = {}, {}
    for key, val in data.items():
        name = str(key).replace("-", "_")
        name = name if name in params else aliases.get(name, name)
        if name in params:
            p = params[name]
            multiple = getattr(p, "multiple", False) or getattr(p, "nargs", 1) == -1
            if multiple:
                defaults[name] = list(val) if isinstance(val, (list, tuple)) else [val]
            else:
                if isinstance(val, bool) and not getattr(p, "is_flag", False):
                    # YAML `limit: true` would become 1 through int(True): a bool is not a number
                    raise typer.BadParameter(f"{key}: {val!r} in {value} is not a valid value for --{p.name.replace('_', '-')} "
                                             "(expected a number or text, not true/false)")
                defaults[name] = _coerce(val)
        elif name in extra:
            extras[name] = val
        else:
            known = sorted(o.lstrip("-") for p in params.values() for o in getattr(p, "opts", []) if o.startswith("--"))
            known += sorted(extra)
            raise typer.BadParameter(f"unknown key {key!r} in {value}{did_you_mean(key, known)}; valid keys: {', '.join(known)}")
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta["config_extra"] = extras
    ctx.meta["config_path"] = str(value)
    return value
