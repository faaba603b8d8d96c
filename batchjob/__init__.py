"""Everything about the BatchJob service and its input files; no chat words here."""

DEFAULT_MODEL = "google/gemini-2.5-flash-image"
DEFAULT_MODE = "fast"
