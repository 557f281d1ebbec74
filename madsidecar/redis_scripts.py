"""Lua scripts run through the gateway: EVALSHA, falling back to EVAL once after Redis
forgot its script cache (a restart or SCRIPT FLUSH)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .redis_gateway import RedisCommandError, RedisGateway


class LuaScript:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    @classmethod
    def beside(cls, module_file: str, name: str) -> LuaScript:
        """The script `name` from the directory of `module_file`."""
        return cls((Path(module_file).parent / name).read_text(encoding="utf-8"))

    async def run(
        self, gateway: RedisGateway, keys: Sequence[str], args: Sequence[Any] = ()
    ) -> Any:
        try:
            return await gateway.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except RedisCommandError as exc:
            if exc.reply_code != "NOSCRIPT":
                raise
        return await gateway.execute("EVAL", self.source, len(keys), *keys, *args)
