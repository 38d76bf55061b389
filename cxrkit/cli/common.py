"""Shared CLI pieces: the typer app, common options, error mapping, rendering.

Results (artifact paths, ``--json``) go to stdout; progress and messages go to
stderr. Only the ``cxrkit.cli`` package knows about typer and exit codes.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cxrkit import __version__
from cxrkit.errors import EXIT_CODES, CxrkitError, Interrupted, OutputError

EXIT_HELP = "Exit codes: " + ", ".join(f"{code} {what}" for what, code in EXIT_CODES.items()) + "."

app = typer.Typer(
    name="cxrkit",
    help="Pretrain and evaluate chest X-ray vision-language foundation models.\n\n"
    "Each stage reads artifacts and writes one: ingest -> annotate -> pretrain -> eval/export.\n\n"
    + EXIT_HELP,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# markup off by default: what cxrkit prints holds paths, report text and values ("[inf]",
# a folder "run[1]") that rich would read as markup; styled lines opt in and escape.
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
out = Console(highlight=False, soft_wrap=True, markup=False)
log = logging.getLogger("cxrkit")
LOG_WIDTH = 160  # columns for tables written to a log file (not a terminal): never wrapped
_state = {"quiet": False}


def is_quiet() -> bool:
    """Whether ``-q/--quiet`` was given: no tables or summaries, only results and errors."""
    return _state["quiet"]


# ---------------------------------------------------------------- shared options
Preset = Annotated[
    str | None,
    typer.Option("--preset", "-p", help="Stage preset name (stages/NAME.toml) or a .toml path."),
]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML/JSON config file; overrides the preset.")
]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override one setting: key=value (repeatable), e.g. optim.lr=1e-4."
    ),
]
FLAG = ""  # metavar of on/off flags: typer would otherwise print "<bool>" as if they took a value
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Print the fully resolved config as JSON and exit.", metavar=FLAG
    ),
]
Force = Annotated[
    bool,
    typer.Option("--force", help="Rebuild even if OUT already holds this artifact.", metavar=FLAG),
]
JsonOut = Annotated[
    bool,
    typer.Option("--json", help="Print the artifact manifest as JSON on stdout.", metavar=FLAG),
]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output artifact directory.")]
Views = Annotated[
    str | None,
    typer.Option(
        "--views",
        help="Only images of these views: PA,AP or frontal (or lateral); "
        "frontal = PA, AP and frontal of unknown projection.",
    ),
]


def views_list(views: str | None) -> list[str] | None:
    """``--views PA,AP`` as the list the stage configs take; None when not given.

    Raises ConfigError when the option names no view (``--views ,``)."""
    if views is None:
        return None
    names = [v.strip() for v in views.split(",") if v.strip()]
    if not names:
        from cxrkit.errors import ConfigError

        raise ConfigError(f"--views {views!r} names no view; e.g. --views PA,AP or frontal")
    return names


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (it may be swapped, e.g. by tests)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: ANN201 - logging's own attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - set by StreamHandler.__init__, ignored
        pass


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger("cxrkit")
    root.handlers.clear()
    if err.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(
            console=err, show_path=False, show_time=False, markup=False, rich_tracebacks=False
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        from cxrkit import reporting

        reporting.set_progress_factory(_rich_progress)
    else:
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s cxrkit %(levelname)s %(message)s", "%H:%M:%S")
        )
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def _rich_progress(desc: str, total: int | None):
    """Rich progress bar on a terminal (installed only when stderr is a TTY)."""
    import contextlib

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    @contextlib.contextmanager
    def manager():
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        ]
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task(desc, total=total, info="")

            class Handle:
                def advance(self, n: int = 1, **info: object) -> None:
                    text = " ".join(f"{k}={v}" for k, v in info.items())
                    bar.update(task, advance=n, info=text)

            yield Handle()

    return manager()


# Write failures that are the environment's, not a bug: disk full, quota, read-only.
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


# The same failures as raised by writers that do not give an OSError (safetensors' Rust
# I/O, some pyarrow paths): recognised by the operating system's message.
_OUTPUT_MESSAGES = ("No space left on device", "Disk quota exceeded", "Read-only file system")


def _output_failure(exc: BaseException) -> str | None:
    """'FILE: No space left on device' for a disk-full/quota/read-only failure, else None."""
    if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    text = str(exc)
    for message in _OUTPUT_MESSAGES:
        if message in text:
            return message
    return None


def guarded(func: Callable) -> Callable:
    """Map cxrkit errors to one-line messages and their exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CxrkitError as exc:
            # escaped: a message quoting a file name or a value like "[inf]" or "[/x]" is
            # text, not rich markup (unescaped it vanishes or raises MarkupError)
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:  # noqa: BLE001 - only write failures of the environment
            reason = _output_failure(exc)
            if reason is None:
                raise
            err.print(
                f"[bold red]error:[/] {escape(reason)} while writing; nothing was published "
                "(partial work stays in the OUT.tmp-* folder for a re-run)",
                markup=True,
            )
            raise typer.Exit(OutputError.exit_code) from None
        except KeyboardInterrupt:
            err.print(
                "[yellow]interrupted[/]; partial work is kept, re-run the same command to resume",
                markup=True,
            )
            raise typer.Exit(Interrupted.exit_code) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        out.print(f"cxrkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output.")
    ] = 0,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Only warnings, errors and results; no tables (also after the subcommand).",
            metavar=FLAG,
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
            metavar=FLAG,
        ),
    ] = False,
) -> None:
    _state["quiet"] = quiet
    _setup_logging(verbose, quiet)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub at run time


# ---------------------------------------------------------------- rendering
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) or "-"
    return str(value)


def print_stats_table(title: str, stats: dict, console: Console = err) -> None:
    """One two-column table of an artifact's stats (nested counts shown inline)."""
    if not stats or is_quiet():
        return
    # Text, not str: titles and cells hold paths and values, never rich markup
    table = Table(title=Text(title), show_header=False, title_justify="left")
    table.add_column("stat", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in stats.items():
        table.add_row(Text(str(key).replace("_", " ")), Text(_fmt(value)))
    console.print(table)


def print_json(data: Any, default: Callable[[Any], Any] | None = None) -> None:
    """Stdout: ``data`` as indented JSON, never styled (rich colours its JSON whenever a
    terminal is forced, e.g. FORCE_COLOR in CI, which breaks ``| jq``)."""
    sys.stdout.write(json.dumps(data, indent=2, default=default) + "\n")
    sys.stdout.flush()


def report_local_rejects(artifact: Any, noun: str = "rejected files") -> None:
    """Stderr: where ingest / ingest-physio listed the rejects with their real paths
    (``OUT.rejects-local.csv``), when there is such a listing and rejects to show."""
    from cxrkit.io.local_rejects import local_rejects_path

    if artifact is None or is_quiet() or not artifact.stats.get("rejects"):
        return
    listing = local_rejects_path(artifact.path)
    if listing.is_file():
        err.print(
            f"{artifact.stats['rejects']} {noun} with their real paths: {listing} "
            "(local only, mode 0600; not part of the artifact, do not share)"
        )


def report_artifact(artifact: Any, as_json: bool) -> None:
    """Stdout: the artifact path (or manifest JSON); stderr: a summary."""
    print_stats_table(f"{artifact.kind} {artifact.path}  id {artifact.id[:12]}", artifact.stats)
    if as_json:
        print_json(artifact.manifest, default=str)
    else:
        out.print(str(artifact.path))


def run_stage(
    stage: str,
    cfg_cls: type | Callable[[], type],
    runner: Callable,
    *,
    preset: str | None,
    config: Path | None,
    sets: list[str] | None,
    flags: dict,
    dry_run: bool,
    as_json: bool,
    force: bool,
    report: bool = True,
    up_to_date: Callable[[Any], Any] | None = None,
) -> Any:
    """Resolve a stage config from its layers and run (or print) it.

    ``cfg_cls`` is the config dataclass, or a function that imports and returns it
    (a stage whose module is heavy to import: it is called only once the config must
    be resolved, and ``flags`` carry ``preset`` where the class records it; a class
    given itself gets it when it has a ``preset`` field). ``report=False`` runs silently (the non-main processes of a
    multi-process launch). ``up_to_date``: for stages whose config is costly to
    resolve, a function of the :class:`~cxrkit.artifacts.requests.Request` that
    returns OUT when it is certainly current (else None); it is asked first (not for
    --force or --dry-run), and the runner then takes ``request=`` to record it.
    Returns the published artifact, or None for ``--dry-run``.
    """
    from cxrkit.config import from_dict, settings_tree, to_dict

    load = cfg_cls if not isinstance(cfg_cls, type) else (lambda: cfg_cls)
    if preset and isinstance(cfg_cls, type) and "preset" in _field_names(cfg_cls):
        flags = {**flags, "preset": preset}  # stages that record their preset's name
    tree = settings_tree(preset=preset, config_file=config, flags=flags, sets=sets, stage=stage)
    kwargs: dict[str, Any] = {}
    if up_to_date is not None:
        from cxrkit.artifacts.requests import Request

        kwargs["request"] = request = Request.of(stage, tree)
        done = None if force or dry_run else up_to_date(request)
        if done is not None:
            if report:
                report_artifact(done, as_json)
            return done
    cfg = from_dict(load(), tree)
    if dry_run:
        if report:
            print_json(to_dict(cfg))
        return None
    artifact = runner(cfg, force=force, **kwargs)
    if report:
        report_artifact(artifact, as_json)
    return artifact


def _field_names(cfg_cls: type) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(cfg_cls)}


def not_built(command: str, plan: str) -> None:
    """Say plainly that a command is not built yet, and exit with its distinct code."""
    from cxrkit.errors import NotBuiltError

    raise NotBuiltError(f"`cxrkit {command}` is not built yet in cxrkit {__version__}: {plan}")
