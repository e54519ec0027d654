"""The release this checkout is: one number, read by the package, the run report and ``--version``.

It lives apart from ``asyncovf/__init__.py`` so that modules below the front
door (the run report records the version that wrote it) name it without
importing the package face that stands above them.
"""

from __future__ import annotations

__version__ = "0.1.0"
