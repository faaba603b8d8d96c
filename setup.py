"""Only the optional native extensions live here; everything else is in pyproject.toml.

`optional=True`: without a C compiler the package installs without it and the pipeline
reads every row in Python (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "batchjob.input._rowscan",
            ["batchjob/input/_rowscan.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        # Spreadsheet extents read before any grid is built (batchjob/input/bounds.py).
        Extension(
            "batchjob.input._extent",
            ["batchjob/input/_extent.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ]
)
