"""Real Meta webhook payloads (``data/webhooks``) and Hypothesis strategies built on them,
shared by the parser's tests and the hostile-input tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

DATA = Path(__file__).resolve().parent / "data" / "webhooks"

FIXTURES = sorted(p.name for p in DATA.glob("*.json"))

def raw(name: str) -> bytes:
    return (DATA / name).read_bytes()

def doc(name: str) -> dict[str, Any]:
    return orjson.loads(raw(name))

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "whatsapp_business_account",
            "messages",
            "statuses",
            "1754006405",
            "wamid.x",
            "sent",
            "failed",
            "message_template_status_update",
            "user_preferences",
            "account_alerts",
            "interactive",
            "button_reply",
        ]
    )
)

json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["id", "status", "timestamp", "from", "type", "errors", "code", "value", "field",
             "changes", "entry", "object", "statuses", "messages", "text", "body", "metadata",
             "contacts", "profile", "name", "wa_id", "interactive", "event", "pricing", "context"]
        )
        | st.text(max_size=8),
        children,
        max_size=5,
    ),
    max_leaves=25,
)  # fmt: skip

def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for key, child in node.items():
            out.append((*prefix, key))
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out.append((*prefix, i))
            out.extend(_paths(child, (*prefix, i)))
    return out

FIXTURE_DOCS = {name: doc(name) for name in FIXTURES}

@st.composite
def mutated_fixtures(draw: Any) -> dict[str, Any]:
    body = copy.deepcopy(FIXTURE_DOCS[draw(st.sampled_from(FIXTURES))])
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = body
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    return body
