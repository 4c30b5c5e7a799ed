"""The unjudged-pool watchdog: trips on a full window over its limit, never on a transient."""

from __future__ import annotations

import pytest

from rlpt_plugin.judge.watchdog import UnjudgedWatchdog, stop_message


def test_trips_only_on_a_full_window_over_the_limit():
    w = UnjudgedWatchdog(max_share=0.5, window=3)
    assert w.observe(8, 8) is None and w.observe(8, 8) is None  # window not full yet
    assert w.observe(8, 8) == 1.0


def test_a_transient_outage_does_not_trip_it():
    w = UnjudgedWatchdog(max_share=0.5, window=4)
    shares = [w.observe(u, 8) for u in (0, 8, 8, 0, 0, 8, 0, 0)]  # two bad steps in any four
    assert shares == [None] * 8


def test_limit_one_never_trips_and_bad_settings_are_named():
    w = UnjudgedWatchdog(max_share=1.0, window=1)
    assert w.observe(8, 8) is None
    with pytest.raises(ValueError, match="max_share"):
        UnjudgedWatchdog(max_share=1.5, window=2)
    with pytest.raises(ValueError, match="window"):
        UnjudgedWatchdog(max_share=0.5, window=0)
    with pytest.raises(ValueError, match="unjudged"):
        UnjudgedWatchdog(max_share=0.5, window=2).observe(9, 8)


def test_the_message_names_the_limit_the_steps_and_the_answers():
    w = UnjudgedWatchdog(max_share=0.25, window=5)
    text = stop_message(0.8, w, 11, ["quality c0: no_verdict; answer: 'maybe'"])
    assert "80%" in text and "steps 7..11" in text and "max_unjudged_share=0.25" in text
    assert "answer: 'maybe'" in text
