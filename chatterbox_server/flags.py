"""Command-line flags generated from pydantic fields, so a flag is never written by hand.

One flag per field: `--max-queue` for `max_queue`, `--warmup/--no-warmup` for a bool, the choices
of a Literal as its metavar, and a help text made of the field's description, its environment
variable (where the tool reads one) and its default. Every flag defaults to None ("not given"), so
`given_flags(namespace)` is exactly what the user typed; the model validates the values.
"""

import argparse
import re
import types
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


def flag_of(name: str) -> str:
    """'max_queue' → '--max-queue'."""
    return "--" + name.replace("_", "-")


def _unwrap_optional(annotation: Any) -> Any:
    """`X | None` → X (a field that may be unset takes the same flag as X)."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def default_text(field: FieldInfo) -> str:
    """How a default reads in --help (and the README's table): 'unset' for None or ''."""
    return "unset" if field.default in (None, "") else str(field.default)


def add_field_flags(
    parser: argparse._ActionsContainer,
    model_cls: type[BaseModel],
    fields: Iterable[str] | None = None,
    env_prefix: str | None = "TTS_",
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Add a flag for each of `fields` (default: every field of `model_cls`) to `parser` (or a group).

    env_prefix: the help names the variable `{env_prefix}{NAME}`; None for a tool that reads none.
    aliases: further spellings per field (`{"model_dtype": ["--dtype"]}`); for a bool, an alias
    spelled `--no-...` sets it to False and any other alias also gets its own `--no-` form.
    Returns the names added (each flag's dest is the field's name)."""
    aliases = aliases or {}
    names = list(model_cls.model_fields if fields is None else fields)
    for name in names:
        field = model_cls.model_fields[name]
        flag = flag_of(name)
        env = f"env {env_prefix}{name.upper()}; " if env_prefix is not None else ""
        help_text = f"{field.description or name} [{env}default: {default_text(field)}]".replace("%", "%%")
        annotation = _unwrap_optional(field.annotation)
        spellings = list(aliases.get(name, ()))
        if annotation is bool:
            negative = [s for s in spellings if s.startswith("--no-")]
            positive = [s for s in spellings if s not in negative]
            parser.add_argument(
                flag, *positive, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
            for spelling in negative:
                parser.add_argument(
                    spelling, dest=name, action="store_const", const=False, help=f"the same as --no-{flag[2:]}"
                )
            continue
        choices = get_args(annotation) if get_origin(annotation) is Literal else None
        parser.add_argument(
            flag,
            *spellings,
            dest=name,
            default=None,
            metavar=name.upper() if choices is None else "{" + ",".join(map(str, choices)) + "}",
            help=help_text,
        )
    return names


def given_flags(namespace: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The values of the `names` flags the user gave (a flag not given is None)."""
    values = vars(namespace)
    return {name: values[name] for name in names if values.get(name) is not None}


def describe_validation_error(exc: ValidationError, fields: Collection[str], env_prefix: str | None = "TTS_") -> str:
    """'--model-dtype (TTS_MODEL_DTYPE) = 'fp17': Input should be 'auto', ...' for each bad field, on one
    line. One of `fields` named in a message (`must be ≥ first_window_tokens (12)`) is shown as its flag."""
    parts = []
    for error in exc.errors():
        message = re.sub(
            r"\b[a-z]+(?:_[a-z0-9]+)+\b",
            lambda m: flag_of(m[0]) if m[0] in fields else m[0],
            error["msg"].removeprefix("Value error, "),
        )
        located = [part for part in error["loc"] if isinstance(part, str)]
        if not located:  # a check across fields names them itself
            parts.append(message)
            continue
        name = located[-1]  # TTSConfig's errors are located as (section, field)
        value = error.get("input")
        shown = f" = {value!r}" if isinstance(value, str | int | float) else ""
        env = f" ({env_prefix}{name.upper()})" if env_prefix is not None else ""
        parts.append(f"{flag_of(name)}{env}{shown}: {message}")
    return "; ".join(parts)
