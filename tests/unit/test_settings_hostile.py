"""Hostile values for the settings added with Sentinel and account caps: whatever the text,
start-up either accepts it or refuses it with an error naming the variable, never crashes."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import FUZZ_COUNTS
from wanotify.config import Settings
from wanotify.core.redis_urls import RedisUrlError, is_sentinel, parse_sentinel_url

_part = st.one_of(
    st.text(max_size=40),
    st.builds(lambda h, p, d: f"sentinel://{h}:{p}{d}",
              st.sampled_from(["127.0.0.1", "redis-a", "", "[::1]", "h\x00st"]),
              st.one_of(st.integers(-5, 70000).map(str), st.text(max_size=6)),
              st.sampled_from(["", "/0", "/15", "/x", "//"])),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(parts=st.lists(_part, min_size=0, max_size=4), sep=st.sampled_from([";", ";;", " ; "]))
def test_any_redis_url_is_accepted_or_refused_naming_the_variable(parts: list[str], sep: str) -> None:
    FUZZ_COUNTS["settings (redis URL, WABA limits)"] = FUZZ_COUNTS.get("settings (redis URL, WABA limits)", 0) + 1
    url = sep.join(parts)
    try:
        s = Settings(redis_url=url)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        assert "WANOTIFY_REDIS_URL" in str(exc)
        return
    if is_sentinel(s.redis_url):
        target = parse_sentinel_url(s.redis_url, s.redis_sentinel_master)
        assert target.sentinels and all(0 < port < 65536 for _, port in target.sentinels)


_rate = st.one_of(st.text(max_size=12), st.integers(), st.floats(allow_nan=True), st.none(),
                  st.builds(lambda n, u: f"{n}/{u}", st.one_of(st.integers(-3, 10**6), st.floats(-1, 1e6)),
                            st.sampled_from(["s", "min", "h", "day", "", "S", "minute"])))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.one_of(st.dictionaries(st.one_of(st.text(max_size=22), st.integers(0, 10**20).map(str)), _rate,
                                      max_size=4),
                      st.lists(_rate, max_size=3), st.text(max_size=30)))
def test_any_waba_limits_value_is_accepted_or_refused_naming_the_variable(data: object) -> None:
    FUZZ_COUNTS["settings (redis URL, WABA limits)"] = FUZZ_COUNTS.get("settings (redis URL, WABA limits)", 0) + 1
    raw = data if isinstance(data, str) else json.dumps(data)
    try:
        s = Settings(waba_limits=raw)
    except ValueError as exc:
        assert "WANOTIFY_WABA_LIMITS" in str(exc)
        return
    for limit in s.waba_limit_map.values():
        assert limit.count > 0 and limit.period_s > 0


def test_sentinel_url_parts_and_errors() -> None:
    t = parse_sentinel_url("sentinel://:s%40cret@10.0.0.5:26380/3;sentinel://10.0.0.6", "cache")
    assert t.sentinels == (("10.0.0.5", 26380), ("10.0.0.6", 26379))
    assert t.db == 3 and t.password == "s@cret" and t.master == "cache"
    assert t.master_kwargs() == {"db": 3, "password": "s@cret"}
    for url, needle in (("sentinel://h:1;redis://h:2", "part 2"), ("sentinel://:9/0", "no host"),
                        ("sentinel://h:x", "not a number"), ("sentinel://h:1/db", "must be a number"),
                        ("SENTINEL://[", "part 1: Invalid IPv6 URL")):
        with pytest.raises(RedisUrlError, match=needle):
            parse_sentinel_url(url, "mymaster")
    with pytest.raises(RedisUrlError, match="SENTINEL_MASTER"):
        parse_sentinel_url("sentinel://h:1", "")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(raw=st.one_of(st.text(max_size=12), st.sampled_from(["true", "false", "1", "0", "yes", "off", "TRUE", " on "])))
def test_any_intake_process_value_is_a_boolean_or_refused_naming_the_variable(raw: str) -> None:
    from pydantic import ValidationError

    from wanotify.config import describe_invalid

    FUZZ_COUNTS["settings (intake process)"] = FUZZ_COUNTS.get("settings (intake process)", 0) + 1
    try:
        s = Settings(intake_process=raw)
    except ValidationError as exc:
        assert describe_invalid(exc).startswith("WANOTIFY_INTAKE_PROCESS: ")
        return
    assert isinstance(s.intake_process, bool)
    assert s.intake_process == (raw.strip().lower() in {"1", "true", "yes", "on", "t", "y"})


def test_a_bad_setting_is_one_line_naming_it_and_exit_code_2() -> None:
    """Any verb, before anything is imported that reads the settings: no traceback."""
    import os
    import subprocess
    import sys

    for var, value in (("WANOTIFY_INTAKE_PROCESS", "maybe"), ("WANOTIFY_PACING_SAFETY", "abc"),
                       ("WANOTIFY_REDIS_URL", "sentinel://")):
        out = subprocess.run([sys.executable, "-m", "wanotify", "worker"], capture_output=True, text=True,
                             env={**os.environ, var: value}, timeout=60)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(f"error: invalid configuration: {var}: ")
        assert "Traceback" not in out.stderr
