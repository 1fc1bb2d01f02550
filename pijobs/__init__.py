"""pijobs: on-demand compute behind one REST call.

Installed, everything is one package: ``pijobs.shared``, ``pijobs.api_handler``, ``pijobs.dispatcher`` and
``pijobs.worker`` are the repository's top-level folders of those names (pyproject's ``package-dir``), beside
this package's own modules (the command line, the client, the embedded stack).
"""

from __future__ import annotations

from pathlib import Path

# Run from a checkout (its root on sys.path: the working directory of ``python -m`` or PYTHONPATH, as the
# benchmarks do for each tree they compare), ``pijobs`` is this folder and the runtime packages are its
# siblings: the checkout's root is searched for them too, after this folder. An installed copy (a wheel or
# an editable install) has them inside already, and no checkout beside it.
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "shared" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))
