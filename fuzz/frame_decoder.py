"""libFuzzer target (atheris): the sans-IO frame decoder, madsidecar/protocol.py.

    ./dev fuzz [SECONDS]      on demand (600 s by default); findings in .fuzz/artifacts/
    .venv/bin/python fuzz/frame_decoder.py -max_total_time=20 WORKDIR fuzz/corpus

The installed module is compiled by mypyc, which coverage cannot see into: the target
loads protocol.py from its source and instruments every function of it.

An input is: byte 0, the max_frame_bytes to decode with (255: the default, 4 MiB); byte 1,
a chunk size; the rest, the byte stream a client sends. The stream goes in whole, then
again in chunks of that size, and both times the events must be the ones the contract
requires (fuzz/oracle.py), the decoder must raise nothing, and what it buffers after
draining must be the one incomplete frame, never more than max_frame_bytes of body.
Every request decoded is then echoed back through the reply encoder.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

import atheris

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's fuzz.oracle and madsidecar.errors

from fuzz.oracle import (  # noqa: E402 (needs the checkout on the path)
    HEADER_SIZE,
    check_events,
    check_reply,
    expected_events,
    packed,
)

SOURCE = ROOT / "madsidecar" / "protocol.py"
DEFAULT_MAX_FRAME = 4 * 1024 * 1024


def load_decoder() -> ModuleType:
    """protocol.py from source, as a module of the madsidecar package (for its relative
    imports), every function and method of it instrumented for coverage."""
    spec = importlib.util.spec_from_file_location("madsidecar._fuzzed_protocol", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    for value in vars(module).values():
        if isinstance(value, FunctionType) and value.__module__ == module.__name__:
            atheris.instrument_func(value)
        elif isinstance(value, type) and value.__module__ == module.__name__:
            for member in vars(value).values():
                if isinstance(member, property) and isinstance(member.fget, FunctionType):
                    atheris.instrument_func(member.fget)
                elif isinstance(member, FunctionType):
                    atheris.instrument_func(member)
    return module


protocol = load_decoder()


def drain(proto: Any, into: list[Any], max_frame: int) -> None:
    while (event := proto.next_event()) is not protocol.NEED_DATA:
        into.append(event)
    # Drained: what is left is one incomplete frame, the consumed head released.
    assert proto.buffered_bytes < HEADER_SIZE + max_frame, proto.buffered_bytes
    assert len(proto._buf) == proto.buffered_bytes, "consumed bytes are released"


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    max_frame = DEFAULT_MAX_FRAME if data[0] == 255 else 1 + data[0] * 16
    chunk = 1 + data[1]
    stream = data[2:]
    want = expected_events(stream, max_frame)

    whole = protocol.ServerProtocol(max_frame)
    whole.receive_data(stream)
    events: list[Any] = []
    drain(whole, events, max_frame)
    check_events(events, want.events, max_frame)
    assert whole.closed == want.closed
    assert whole.buffered_bytes == want.waiting

    chunked = protocol.ServerProtocol(max_frame)
    pieces: list[Any] = []
    for start in range(0, len(stream), chunk):
        chunked.receive_data(stream[start : start + chunk])
        drain(chunked, pieces, max_frame)
    check_events(pieces, want.events, max_frame)
    assert chunked.buffered_bytes == want.waiting

    for event in events:
        if type(event) is protocol.Request:
            reply = [1, event.msgid, None, event.args]
            check_reply(whole.response(event.msgid, event.args), reply)
            check_reply(whole.response(event.msgid, protocol.Packed(packed(event.args))), reply)
        elif type(event) is protocol.InvalidMessage and event.msgid is not None:
            check_reply(
                whole.error_response(event.msgid, event.error), [1, event.msgid, event.error, None]
            )


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
