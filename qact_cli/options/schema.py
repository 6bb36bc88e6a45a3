"""One declaration per option: a dataclass field whose metadata says its flag, help and checks.

    @dataclass
    class Options:
        limit: int | None = option("--limit", help="N evenly spaced images.", minimum=1)

`command(...)` gives a command function the Typer parameters of such fields (Typer reads
`inspect.signature`, so the generated signature is attached as `__signature__`); the YAML config
reads the option names from that signature; `from_values` builds the dataclass from CLI, YAML or
keyword values with one coercion and one check per field.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import PurePath
from typing import Annotated, Any, Callable, Mapping, Optional

from ..errors import UsageError
from ..suggest import unknown as unknown_name


NOT_GIVEN = object()  # a Flag's cli_default when the field's own default applies


@dataclass(frozen=True)
class Flag:
    """What the command line knows of a field (its `metadata["flag"]`)."""

    decl: str                       # "--batch-size", "--augment/--no-augment", or an argument's METAVAR
    help: str | None = None
    cli_type: Any = None            # the type Typer parses, when not the field's
    cli_default: Any = NOT_GIVEN    # the command line's default, when the field has none (or another)
    param: str | None = None        # the parameter / config key name, when not the field's name
    to_field: Callable | None = None  # CLI value -> field value, when they differ
    choices: tuple = ()
    minimum: float | None = None
    fraction: str | None = None     # a value in [0, 1], and how to write one
    argument: bool = False
    typer: Mapping = dataclasses.field(default_factory=dict)  # further typer.Option / typer.Argument keywords

    @property
    def flag(self) -> str:
        return self.decl.split("/")[0]


def option(decl: str, default: Any = MISSING, help: str | None = None, *, factory: Callable | None = None,
           **spec) -> Any:
    """A dataclass field that is also a command-line option (`spec`: the other `Flag` fields)."""
    flag = Flag(decl, help, **{k: v for k, v in spec.items() if k in Flag.__dataclass_fields__},
                typer={k: v for k, v in spec.items() if k not in Flag.__dataclass_fields__})
    if factory is not None:
        return field(default_factory=factory, metadata={"flag": flag})
    return field(default=default, metadata={"flag": flag})


def argument(metavar: str, help: str, **spec) -> Any:
    """A positional command-line argument (a list of MODELs or ITEMs)."""
    return option(metavar, None, help, argument=True, cli_type=Optional[list[str]], show_default=False, **spec)


def flag_fields(schema, names: tuple[str, ...] | None = None) -> list[dataclasses.Field]:
    """The fields of `schema` that are command-line options, in declaration order (or `names`' order)."""
    declared = {f.name: f for f in dataclasses.fields(schema) if "flag" in f.metadata}
    if names is None:
        return list(declared.values())
    return [declared[n] for n in names]


def param_name(f: dataclasses.Field) -> str:
    return f.metadata["flag"].param or f.name


def _parameter(schema, f: dataclasses.Field) -> inspect.Parameter:
    import typer

    spec: Flag = f.metadata["flag"]
    hint = spec.cli_type or typing.get_type_hints(schema)[f.name]
    if spec.cli_default is not NOT_GIVEN:
        default = spec.cli_default
    elif f.default_factory is not MISSING:
        default = f.default_factory()
    else:
        default = f.default
    info = (typer.Argument(metavar=spec.decl, help=spec.help, **spec.typer) if spec.argument
            else typer.Option(spec.decl, help=spec.help, **spec.typer))
    return inspect.Parameter(param_name(f), inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[hint, info])


def command(*layout, leading: tuple[inspect.Parameter, ...] = ()):
    """Give a command function the parameters of the schemas in `layout`, in that order: each item
    a schema (all its option fields) or (schema, names). The function receives them as keywords."""

    def decorate(fn):
        params = list(leading)
        for part in layout:
            schema, names = part if isinstance(part, tuple) else (part, None)
            params += [_parameter(schema, f) for f in flag_fields(schema, names)]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs)

        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {}
        wrapper.layout = layout
        return wrapper

    return decorate


def pick(schema, values: Mapping[str, Any]) -> dict:
    """The values of `schema`'s command-line fields among `values` (keyed by parameter name), as field values."""
    out = {}
    for f in flag_fields(schema):
        name = param_name(f)
        if name in values:
            convert = f.metadata["flag"].to_field
            out[f.name] = convert(values[name]) if convert else values[name]
    return out


# ------------------------------------------------------------------------------------ values and checks
def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _want(schema, name: str):
    hint = typing.get_type_hints(schema).get(name)
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return next((t for t in (bool, int, float) if t in args), None)


def coerce(schema, name: str, value, where: str = "the options"):
    """A YAML / keyword value as the field's type: '8' -> 8 for integers, [0, 1] -> '0,1' for a text
    option; anything else that does not fit is a usage error naming the option."""
    if value is None:
        return None
    want = _want(schema, name)
    if want is None and isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if want is bool:
        if isinstance(value, bool):
            return value
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif want is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    elif isinstance(value, (str, int, float, PurePath)) and not isinstance(value, bool):
        return str(value)
    kind = {bool: "true or false", int: "an integer", float: "a number"}.get(want, "a string")
    raise UsageError(f"{flag_of(name)} in {where} must be {kind}, got {value!r}")


def check_value(f: dataclasses.Field, value) -> None:
    """The field's declared rule (choices, minimum, fraction): exit 2 naming the flag."""
    spec: Flag | None = f.metadata.get("flag")
    if value is None or spec is None:
        return
    if spec.choices and value not in spec.choices:
        raise UsageError(unknown_name(spec.flag, value, spec.choices))
    if spec.minimum is not None and value < spec.minimum:
        raise UsageError(f"{spec.flag} must be ≥ {spec.minimum}, got {value}")
    if spec.fraction and not 0 <= value <= 1:
        raise UsageError(f"{spec.flag} {value}: expected {spec.fraction}")


def check(obj) -> None:
    for f in dataclasses.fields(obj):
        check_value(f, getattr(obj, f.name))


def from_values(schema, values: Mapping[str, Any], where: str = "the options", allowed=None):
    """`schema` from a mapping (YAML, keywords, CLI parameters): None means the default, unknown keys
    (beyond `allowed`, default every field) are a usage error, each value is coerced and checked."""
    names = set(allowed) if allowed is not None else {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r} in {where}; valid: {', '.join(sorted(names))}")
    obj = schema(**{k: coerce(schema, k, v, where) for k, v in values.items() if v is not None})
    check(obj)
    return obj


def keywords(*schemas, leave_out: tuple[str, ...] = ()) -> list[str]:
    """The Python keywords a function built on these schemas accepts (their fields, in order)."""
    return [f.name for s in schemas for f in dataclasses.fields(s) if f.name not in leave_out]
