"""Command-line options shared by several `agent` commands, and options that map onto a
pydantic config model.

A command whose settings are a config model declares those options with `config_option`
(`learning_rate: float = config_option(SFTRunConfig, "learning_rate")`): default and help are
the field's, and the parameter is named after the field's path (`lora_r` for `lora.r`), so
`build_config(SFTRunConfig, ctx)` puts its value back there. Options that are not config
fields use the `Annotated` style. A value the model refuses ends the command with one line per
problem, naming the option, and exit code 2 (`config_errors`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticUndefined

Config = TypeVar("Config", bound=BaseModel)


def check_tools(value: str | None) -> str | None:
    """Refuse an unknown tool set or tool name before anything starts."""
    if value is not None:
        from tools.control import select_tools

        try:
            select_tools(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


SandboxOption = Annotated[str, typer.Option(help="docker (isolated) or local (no isolation).")]
NetworkOption = Annotated[bool, typer.Option(help="Give the sandbox a network.")]
ContextWindowOption = Annotated[int | None, typer.Option(
    help="The model's window in tokens (default: its metadata).")]
RepoMapTokensOption = Annotated[int, typer.Option(
    help="Repository map in the system prompt, in tokens (0: none).")]
CompactAtOption = Annotated[float, typer.Option(
    min=0.1, max=1.0, help="Share of the window at which the context is compacted.")]
TOOLS_HELP = ("Tools the model gets: full, core (bash, view, create, str_replace, grep, "
              "finish), tool names, or both (core,glob). Default: the model's own (core for "
              "smollm2-135m, else full).")
ToolsOption = Annotated[str | None, typer.Option(callback=check_tools, help=TOOLS_HELP)]


def _nested_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def config_field(model: type[BaseModel], path: str) -> FieldInfo:
    """The field at `path` ("lora.r") of `model`."""
    first, _, rest = path.partition(".")
    field = model.model_fields[first]
    if not rest:
        return field
    nested = _nested_model(field)
    if nested is None:
        raise KeyError(f"{model.__name__}.{first} is not a config model")
    return config_field(nested, rest)


def config_default(model: type[BaseModel], path: str) -> Any:
    """The default of the field at `path`, read through the defaults of the models above it
    (`EvalOptions.episode` defaults to 8 steps, not EpisodeConfig's 30); `...` if required."""
    first, _, rest = path.partition(".")
    value = model.model_fields[first].get_default(call_default_factory=True)
    if rest and value is PydanticUndefined:
        return config_default(_nested_model(model.model_fields[first]) or model, rest)
    for name in rest.split(".") if rest else []:
        value = getattr(value, name)
    return ... if value is PydanticUndefined else value


def config_option(model: type[BaseModel], path: str, *flags: str, **settings: Any) -> Any:
    """A typer option for the field at `path` of `model`, with the field's default and (unless
    `help` is given) its description. `flags` rename it (`"--grad-accum"`)."""
    settings.setdefault("help", config_field(model, path).description)
    return typer.Option(config_default(model, path), *flags, **settings)


def option_path(model: type[BaseModel], name: str) -> str | None:
    """The field path an option parameter name stands for (`lora_r` -> `lora.r`), or None."""
    if name in model.model_fields:
        return name
    for field_name, field in model.model_fields.items():
        nested = _nested_model(field)
        if nested and name.startswith(field_name + "_"):
            path = option_path(nested, name[len(field_name) + 1:])
            if path:
                return f"{field_name}.{path}"
    return None


def build_config(model: type[Config], ctx: typer.Context, **computed: Any) -> Config:
    """`model` from the running command's options and `computed` values (same naming);
    options that are no field path are left out. Invalid values end the command as
    `config_errors` says."""
    values: dict[str, Any] = {}
    for name, value in {**ctx.params, **computed}.items():
        path = option_path(model, name)
        if path is None:
            continue
        *parents, leaf = path.split(".")
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    with config_errors(ctx):
        return model.model_validate(values)


def _flag(loc: tuple[int | str, ...], flags: Mapping[str, str] | None) -> str:
    """The option behind an error location: the longest tail of it that names a parameter
    (`("lora", "r")` -> `--lora-r`, `("llm", "max_tokens")` -> `--max-tokens`). With no
    command at hand, the flag typer would give the field's own name."""
    parts = [str(part) for part in loc]
    if flags is None:
        return "--" + parts[-1].replace("_", "-") if parts else "options"
    for start in range(len(parts)):
        flag = flags.get("_".join(parts[start:]))
        if flag:
            return flag
    return ".".join(parts) or "options"


def _problem(error: ErrorDetails) -> str:
    context = error.get("ctx", {})
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if error["type"] in bounds:
        words, key = bounds[error["type"]]
        text = f"must be {words} {context[key]}"
    elif error["type"] == "literal_error":
        text = f"must be {context['expected']}"
    else:
        text = error["msg"][:1].lower() + error["msg"][1:]
    value = error.get("input")
    if error["type"] == "missing":
        return text
    return f"{text} (got {value!r})" if isinstance(value, str) else f"{text} (got {value})"


def option_problems(error: ValidationError, ctx: typer.Context | None = None) -> list[str]:
    """One `--flag: what is wrong (got value)` line per problem, the flags those of `ctx`'s
    command."""
    flags = {param.name: param.opts[0] for param in ctx.command.params
             if param.name and param.opts} if ctx else None
    return [f"{_flag(e['loc'], flags)}: {_problem(e)}" for e in error.errors()]


@contextmanager
def config_errors(ctx: typer.Context | None = None) -> Iterator[None]:
    """Around building a config from the options of `ctx`'s command: a `ValidationError`
    becomes one `agent: error: --flag: ...` line per problem on stderr and exit code 2. It
    exits with SystemExit, which a command's `except Exception` for unexpected failures lets
    through."""
    try:
        yield
    except ValidationError as exc:
        for line in option_problems(exc, ctx):
            print(f"agent: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def limit_problem(max_steps: int, context_window: int | None, repo_map_tokens: int,
                  timeout: float = 1.0, max_tokens: int = 1, temperature: float = 0.0
                  ) -> str | None:
    """What is wrong with the numeric options of `solve` / `tui`, naming the flag, or None.
    Written so that NaN fails too."""
    checks = [
        (max_steps >= 1, f"--max-steps must be at least 1, not {max_steps}"),
        (context_window is None or context_window >= 1,
         f"--context-window must be a positive number of tokens, not {context_window}"),
        (repo_map_tokens >= 0, f"--repo-map-tokens must be 0 or more, not {repo_map_tokens}"),
        (math.isfinite(timeout) and timeout > 0,
         f"--timeout must be a positive number of seconds, not {timeout}"),
        (max_tokens >= 1, f"--max-tokens must be at least 1, not {max_tokens}"),
        (math.isfinite(temperature) and temperature >= 0,
         f"--temperature must be 0 or more, not {temperature}"),
    ]
    return next((message for ok, message in checks if not ok), None)


def text_file_problem(path: Path, what: str) -> str | None:
    """Why the file at `path` is not UTF-8 text (`what` names it: "issue file"), or None.
    A missing file is left to the caller, which says what to pass instead."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                f"{exc.start}); give a Markdown or plain-text file")
    if b"\0" in data:
        return (f"{what} {path} looks binary (it holds NUL bytes); give a Markdown or "
                "plain-text file")
    return None
