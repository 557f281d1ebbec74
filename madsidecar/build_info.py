"""Whether the request path runs as compiled C extensions (mypyc, see setup.py), and
whether any of them is older than its source (edited since the last build)."""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGE = Path(__file__).parent
_SHARED_RUNTIME = "native__mypyc"


def compiled_modules(package: Path = PACKAGE) -> list[Path]:
    """The extension modules built from a package's sources (this one's by default)."""
    found = []
    for suffix in EXTENSION_SUFFIXES:
        for path in package.rglob(f"*{suffix}"):
            if not path.name.startswith(_SHARED_RUNTIME) and path not in found:
                found.append(path)
    return sorted(found)


def is_compiled() -> bool:
    from . import connection

    return not connection.__file__.endswith(".py") if connection.__file__ else False


def stale_modules(package: Path = PACKAGE) -> list[str]:
    """Sources edited after their extension module was built: Python imports the
    extension, so the edit would silently not run."""
    # The code itself is in the shared runtime; the per-module files are shims that a
    # rebuild leaves untouched.
    runtimes = [path for path in package.glob(f"{_SHARED_RUNTIME}*") if path.is_file()]
    if not runtimes:
        return []
    built_at = max(path.stat().st_mtime for path in runtimes)
    stale = []
    for module in compiled_modules(package):
        source = module.with_name(module.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > built_at:
            stale.append(str(source.relative_to(package.parent)))
    return stale
