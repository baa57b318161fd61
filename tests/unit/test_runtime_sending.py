"""``delivery.runtime.sending()``: what the notify queue's puller asks before it takes a burst
(a sending worker leaves it to an idle one). It never builds a runtime, and a runtime
inherited over a fork is not this process's."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest

from wanotify.delivery import runtime


def test_sending_is_true_only_while_this_process_drains_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_runtime", None)
    monkeypatch.setattr(runtime, "_pid", None)
    assert runtime.sending() is False
    assert runtime._runtime is None  # asking built nothing
    rt = SimpleNamespace(dispatcher=SimpleNamespace(wakers={}))
    monkeypatch.setattr(runtime, "_runtime", rt)
    monkeypatch.setattr(runtime, "_pid", os.getpid())
    assert runtime.sending() is False  # a runtime, no drain
    rt.dispatcher.wakers["main"] = asyncio.Event()  # a drain owns "main" (Dispatcher.drain)
    assert runtime.sending() is True
    monkeypatch.setattr(runtime, "_pid", os.getpid() + 1)  # the parent's, after a fork
    assert runtime.sending() is False
