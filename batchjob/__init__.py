"""Everything about the BatchJob service and its input files; no chat words here."""

DEFAULT_MODEL = "google/gemini-2.5-flash-image"
DEFAULT_MODE = "fast"


def format_amount(value: object) -> str:
    """A price or balance as people read it: 0.0800 -> 0.08, 1000.0 -> 1000, None -> ?."""
    if value is None:
        return "?"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def version() -> str:
    """The installed release (one distribution holds the bot, the CLI and the library)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("batchjob-bot")
    except PackageNotFoundError:
        return "unknown"
