"""Build hook: the sidecar's request path compiled to C extensions by mypyc.

The same sources, type-checked by `mypy --strict`, become C extension modules that run
the request path at about twice the speed (docs/performance.md). Nothing else changes:
with MADSIDECAR_COMPILE=0, or without a C compiler, the package is plain Python and
behaves the same. `pip install .` compiles (mypy is a build requirement); `./dev`
compiles in place after installing the dependencies (`python setup.py build_ext
--inplace`), and rebuilds when a source changes.
"""

from __future__ import annotations

import os

from setuptools import setup

# The modules every request goes through. Startup, configuration and the command line stay
# interpreted: they run once, and compiling them would only slow the build.
COMPILED = [
    "madsidecar/protocol.py",
    "madsidecar/deferred.py",
    "madsidecar/methods.py",
    "madsidecar/ordering.py",
    "madsidecar/request_metrics.py",
    "madsidecar/connection.py",
    "madsidecar/core.py",
    "madsidecar/redis_gateway.py",
    "madsidecar/redis_scripts.py",
    "madsidecar/redis_feed.py",
    "madsidecar/background.py",
    "madsidecar/hash_tags.py",
    "madsidecar/timer_wheel.py",
    "madsidecar/cache/capability.py",
    "madsidecar/cache/guard.py",
    "madsidecar/cache/keys.py",
    "madsidecar/cache/l1.py",
    "madsidecar/locks/backends.py",
    "madsidecar/locks/capability.py",
    "madsidecar/locks/keys.py",
    "madsidecar/sessions/capability.py",
    "madsidecar/sessions/keys.py",
    "madsidecar/ratelimit/capability.py",
    "madsidecar/ratelimit/fallback.py",
    "madsidecar/ratelimit/keys.py",
]
# The Python SDK's call path, as its own extension group: it must not need the daemon's.
COMPILED_SDK = [
    "clients/python/madsidecar_client/_protocol.py",
    "clients/python/madsidecar_client/aio.py",
    "clients/python/madsidecar_client/blocking.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("MADSIDECAR_COMPILE", "1") == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    # Each group's shared runtime goes inside its package (madsidecar/native__mypyc.*.so),
    # so it is found wherever the package is, not only from the source tree's root.
    groups = [(COMPILED, "madsidecar.native"), (COMPILED_SDK, "madsidecar_client.native")]
    # In an isolated build (pip install .) the dependencies are not installed: their types
    # become Any, which compiles all the same.
    options = ["--ignore-missing-imports"]
    extensions = list(mypycify(options + COMPILED + COMPILED_SDK, opt_level="3", separate=groups))
    for extension in extensions:
        extension.optional = True  # no C compiler: install the plain Python package
    return extensions


setup(ext_modules=ext_modules())
