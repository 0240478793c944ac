"""Sphinx configuration of the API reference (``make docs``: built with -W, warnings are errors)."""

from __future__ import annotations

import mtlkernels

project = "mtlkernels"
author = "the mtlkernels contributors"
copyright = "2026, the mtlkernels contributors"
release = mtlkernels.__version__ if hasattr(mtlkernels, "__version__") else "0.1.0"
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
exclude_patterns = ["_build", "papers.md"]
# Numpy-style sections (Parameters / Attributes / Examples) and the Google style some modules use.
napoleon_numpy_docstring = True
napoleon_google_docstring = True
napoleon_use_rtype = False
# scikit-learn generates set_*_request methods whose docstrings link into its own docs.
autodoc_default_options = {
    "members": True, "show-inheritance": True,
    "exclude-members": "set_fit_request,set_score_request,set_predict_request,set_decision_function_request,"
                       "set_task_rmse_request",
}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the docstrings say the types; torch's annotations do not all resolve
autodoc_inherit_docstrings = True
# Nothing is fetched: no intersphinx, the build runs offline.
html_theme = "alabaster"
html_static_path: list[str] = []
nitpicky = False
suppress_warnings = ["ref.python"]  # an unqualified name in a docstring may match two classes
