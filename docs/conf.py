"""Sphinx configuration for the mongoreact documentation."""

project = "mongoreact"
author = "mongoreact developers"
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
html_theme = "furo"
html_title = "mongoreact"
myst_heading_anchors = 3
exclude_patterns = ["_build"]
nitpicky = False
html_static_path = ["_static"]
