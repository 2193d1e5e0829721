"""
Sphinx configuration for the Piko for Twisted documentation.

The pages are Markdown (MyST) and reST; the API reference is autodoc over
the installed ``piko`` package, and the CLI and YAML reference is rendered
from the option tables by the local ``piko_options`` extension.  Build with
warnings as errors::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

import piko

project = "Piko for Twisted"
author = "Piko for Twisted contributors"
copyright = "Piko for Twisted contributors"
release = piko.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "piko_options",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "examples", "_ext"]
myst_heading_anchors = 3

# The API pages document what the package exports (``__all__``).
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"

html_theme = "alabaster"
html_title = f"Piko for Twisted {release}"
html_static_path: list[str] = []
