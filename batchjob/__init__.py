"""Everything about the BatchJob service and its input files; no chat words here."""

from typing import Any

DEFAULT_MODEL = "google/gemini-2.5-flash-image"
DEFAULT_MODE = "fast"


def format_amount(value: object) -> str:
    """A price or balance as people read it: 0.0800 -> 0.08, 1000.0 -> 1000, None -> ?."""
    if value is None:
        return "?"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def add_version_option(parser: Any) -> None:
    """`--version` on an argparse parser, read from the installed release only when asked:
    importlib.metadata costs ~25 ms at every start of a short command otherwise."""
    import argparse

    class ShowVersion(argparse.Action):
        def __init__(self, option_strings: list[str], dest: str, **_: Any) -> None:
            super().__init__(
                option_strings,
                dest=argparse.SUPPRESS,
                default=argparse.SUPPRESS,
                nargs=0,
                help="show program's version number and exit",
            )

        def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
            print(f"{parser.prog} {version()}")  # on stdout, as argparse's own action
            parser.exit()

    parser.add_argument("--version", action=ShowVersion)


def version() -> str:
    """The installed release (one distribution holds the bot, the CLI and the library)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("batchjob-bot")
    except PackageNotFoundError:
        return "unknown"
