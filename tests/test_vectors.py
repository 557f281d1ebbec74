"""The conformance vectors every SDK checks byte for byte: current, and passed by Python."""

from __future__ import annotations

import json
from typing import Any

import pytest

from madsidecar_client._protocol import ClientProtocol, Notification, Response

from .vectors import generate
from .vectors.generate import METHODS, VECTORS, untagged

ALL = json.loads(VECTORS.read_text())


def test_vector_files_are_what_the_generator_makes() -> None:
    for path, text in generate.render().items():
        assert path.read_text() == text, f"{path.name} is stale: python -m tests.vectors.generate"


def test_every_method_the_sidecar_serves_has_a_request_vector() -> None:
    served = {m["name"] for m in json.loads(METHODS.read_text())["methods"]}
    assert served == {v["method"] for v in ALL["requests"]}
    assert {"lock.acquire", "ratelimit.hit_many", "session.revoke_user"} <= served


@pytest.mark.parametrize("vector", ALL["requests"], ids=lambda v: v["name"])
def test_python_sdk_encodes_each_request(vector: dict[str, Any]) -> None:
    args = untagged(vector.get("args"))
    frame = ClientProtocol().request(vector["msgid"], vector["method"], args)
    assert frame.hex() == vector["frame"]


@pytest.mark.parametrize("vector", ALL["responses"], ids=lambda v: v["name"])
def test_python_sdk_decodes_each_response(vector: dict[str, Any]) -> None:
    (message,) = ClientProtocol().receive_data(bytes.fromhex(vector["frame"]))
    assert isinstance(message, Response)
    assert message.msgid == vector["msgid"]
    assert_same(message.error, untagged(vector.get("error")))
    assert_same(message.result, untagged(vector.get("result")))


@pytest.mark.parametrize("vector", ALL["notifications"], ids=lambda v: v["name"])
def test_python_sdk_decodes_each_notification(vector: dict[str, Any]) -> None:
    (message,) = ClientProtocol().receive_data(bytes.fromhex(vector["frame"]))
    assert isinstance(message, Notification)
    assert message.name == vector["notification"]
    assert_same(message.payload, untagged(vector["payload"]))


def assert_same(got: Any, want: Any) -> None:
    """Equal and of the same types all the way down (1 == 1.0 == True in Python)."""
    assert type(got) is type(want), (got, want)
    if isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, list):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    else:
        assert got == want
