"""WindowBuffer: sliding, view selection, late/out-of-order frames and time jumps."""

from __future__ import annotations

import numpy as np
import pytest

from lrm4d_core.stream import NS, Frame, WindowBuffer, WindowConfig

CAMS = ("front", "left", "right")


def frame(camera: str, t_s: float) -> Frame:
    return Frame(camera, int(round(t_s * NS)), np.zeros((4, 4, 3), np.uint8), np.eye(3), np.eye(4))


def step(t_s: float, cams=CAMS) -> list[Frame]:
    return [frame(c, t_s) for c in cams]


def feed(buf: WindowBuffer, times, cams=CAMS):
    return [w for t in times if (w := buf.add_step(step(t, cams))) is not None]


def test_round_robin_cycles_cameras_over_steps_and_slides():
    buf = WindowBuffer(WindowConfig(duration_s=1.0, update_period_s=0.0, max_views=100, min_steps=1), CAMS)
    windows = feed(buf, np.arange(0, 2.0, 0.1))
    last = windows[-1]
    assert last.end_ns == int(round(1.9 * NS))
    # 1 s duration at 10 Hz: steps 0.9 .. 1.9 (11 steps), one camera each, cycling
    assert len(last.frames) == 11
    assert [f.stamp_ns for f in last.frames] == sorted(f.stamp_ns for f in last.frames)
    cams = last.cameras
    assert all(cams[i] != cams[i + 1] for i in range(len(cams) - 1))
    assert set(cams) == set(CAMS)
    # phase is tied to the step, not to the window: the same step keeps its camera as the window slides
    prev = {f.stamp_ns: f.camera for f in windows[-2].frames}
    assert all(prev[f.stamp_ns] == f.camera for f in last.frames if f.stamp_ns in prev)
    np.testing.assert_allclose(last.times[-1], 0.0)
    np.testing.assert_allclose(last.times[0], -1.0)


def test_max_views_spreads_steps_and_keeps_newest():
    buf = WindowBuffer(WindowConfig(duration_s=5.0, update_period_s=0.0, max_views=6, min_steps=1), CAMS)
    last = feed(buf, np.arange(0, 3.0, 0.1))[-1]
    assert len(last.frames) == 6
    assert last.frames[-1].stamp_ns == last.end_ns
    assert last.frames[0].stamp_ns == 0


def test_all_and_latest_selection():
    cfg = WindowConfig(duration_s=5.0, update_period_s=0.0, max_views=6, selection="all", min_steps=1)
    w = feed(WindowBuffer(cfg, CAMS), [0.0, 0.1, 0.2, 0.3])[-1]
    assert len(w.frames) == 6 and w.frames[-1].stamp_ns == w.end_ns
    assert sorted(w.cameras) == sorted(CAMS * 2)
    cfg = WindowConfig(duration_s=5.0, update_period_s=0.0, max_views=4, selection="latest", min_steps=1)
    w = feed(WindowBuffer(cfg, CAMS), [0.0, 0.1, 0.2, 0.3])[-1]
    stamps = sorted({f.stamp_ns for f in w.frames})
    assert len(w.frames) == 4 and stamps == [int(0.2 * NS), int(0.3 * NS)]


def test_update_period_and_min_steps():
    buf = WindowBuffer(WindowConfig(duration_s=2.0, update_period_s=0.5, min_steps=3), CAMS)
    windows = feed(buf, np.arange(0, 2.0, 0.1))
    ends = [w.end_ns / NS for w in windows]
    np.testing.assert_allclose(ends, [0.2, 0.7, 1.2, 1.7])
    assert buf.counters["windows"] == 4


def test_late_and_out_of_order_frames():
    buf = WindowBuffer(WindowConfig(duration_s=1.0, update_period_s=0.0, min_steps=1, max_views=50), CAMS)
    feed(buf, [0.0, 0.2, 0.4, 1.5])
    # older than the window start (1.5 - 1.0): dropped and counted
    assert buf.add_step(step(0.3)) is None
    assert buf.counters["late_dropped"] == 3
    # out of order but inside the window: inserted in time order
    w = buf.add_step(step(0.9))
    assert [f.stamp_ns for f in w.frames] == sorted(f.stamp_ns for f in w.frames)
    assert int(0.9 * NS) in {f.stamp_ns for f in w.frames}
    assert buf.counters["out_of_order"] == 1
    # a duplicate camera frame at an existing stamp is dropped; a missing one merges in
    buf.add_step([frame("front", 1.5)])
    assert buf.counters["duplicate_dropped"] == 1


def test_backwards_time_jump_resets_once(caplog):
    buf = WindowBuffer(WindowConfig(duration_s=1.0, update_period_s=0.0, min_steps=2, jump_back_s=1.5), CAMS)
    feed(buf, np.arange(0, 3.0, 0.1))
    with caplog.at_level("WARNING"):
        assert buf.add_step(step(0.05)) is None  # only one step after the reset
    assert buf.counters["time_jump_resets"] == 1
    assert sum("jumped back" in r.message for r in caplog.records) == 1
    w = buf.add_step(step(0.15))
    assert w is not None and w.start_ns == int(0.05 * NS) and w.end_ns == int(0.15 * NS)


def test_camera_that_stops_publishing_hands_its_turn_on():
    buf = WindowBuffer(WindowConfig(duration_s=10.0, update_period_s=0.0, max_views=100, min_steps=1, jump_back_s=10.0), CAMS)
    feed(buf, np.arange(0, 1.0, 0.1))
    windows = feed(buf, np.arange(1.0, 2.0, 0.1), cams=("front", "left"))
    late = [f for f in windows[-1].frames if f.stamp_ns >= NS]
    assert len(late) == 10 and {f.camera for f in late} == {"front", "left"}


def test_config_validation():
    with pytest.raises(ValueError):
        WindowConfig(duration_s=None, max_steps=None)
    with pytest.raises(ValueError):
        WindowConfig(selection="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        WindowConfig(duration_s=3.0, jump_back_s=1.0)
    buf = WindowBuffer(WindowConfig(duration_s=None, max_steps=3, update_period_s=0.0, min_steps=1, max_views=99), CAMS)
    w = feed(buf, [0, 1, 2, 3, 4])[-1]
    assert len({f.stamp_ns for f in w.frames}) == 3


def test_a_short_loop_resets_the_window_whatever_jump_back_s_says():
    """A 4.8 s bag looping jumps back 4.7 s, less than jump_back_s (5 s) but more than the 2 s
    window: one straggling step is dropped as late, the second in a row resets the window, and
    windows keep coming (they used to stop: every later frame was late or a duplicate)."""
    buf = WindowBuffer(WindowConfig(duration_s=2.0, update_period_s=0.5, min_steps=2, jump_back_s=5.0), CAMS)
    first = feed(buf, np.arange(0.0, 4.8, 0.1))
    straggler = buf.add_step(step(2.5))  # one late group: late, not a jump
    assert straggler is None and buf.counters["late_dropped"] == 3 and buf.counters["time_jump_resets"] == 0
    second = feed(buf, np.arange(0.1, 4.8, 0.1))  # the loop: stamps start again 4.7 s back
    assert buf.counters["time_jump_resets"] == 1
    assert len(second) >= len(first) - 2 and second[-1].end_ns == int(round(4.7 * NS))


@pytest.mark.parametrize("length_s", [1.5, 0.8])
def test_a_bag_shorter_than_the_window_looping_keeps_windows_coming(length_s):
    """Looped stamps of a bag shorter than the window are all inside it (duplicates): no step is
    late and none jumps back by jump_back_s, so only rising stamps at or before the newest show
    the clock went back. Windows must come on every pass, not only the first."""
    buf = WindowBuffer(WindowConfig(duration_s=2.0, update_period_s=0.5, min_steps=2, jump_back_s=5.0), CAMS)
    stamps = np.round(np.arange(0.0, length_s, 0.1), 3)
    per_pass = []
    for _ in range(4):
        before = buf.counters["windows"]
        ends = [w.end_ns for w in feed(buf, stamps)]
        per_pass.append(buf.counters["windows"] - before)
        assert ends and max(ends) > int(round((stamps[-1] - 0.5) * NS))  # up to the pass's end
    assert min(per_pass) >= 1, per_pass
    assert buf.counters["time_jump_resets"] == 3
    # each reset costs the first two looped steps (kept as duplicates or out of order), nothing more
    assert buf.counters["duplicate_dropped"] <= 3 * 2 * len(CAMS)


def test_stragglers_and_a_lagging_camera_do_not_reset_the_window():
    """Late groups with falling stamps are stragglers, and a camera whose frames always arrive a
    few steps late merges them into buffered groups with rising stamps: neither is a clock going
    back (the window keeps its steps and every lagging frame)."""
    buf = WindowBuffer(WindowConfig(duration_s=2.0, update_period_s=0.0, min_steps=1, max_views=99,
                                    selection="all"), CAMS)
    feed(buf, np.arange(0.0, 3.0, 0.1))
    buf.add_step(step(2.55))
    buf.add_step(step(2.45))
    assert buf.counters["out_of_order"] == 2
    lagging = WindowBuffer(buf.config, CAMS)
    for t in np.arange(0.0, 3.0, 0.1):
        lagging.add_step(step(t, cams=("front", "left")))
        if t >= 0.3:
            lagging.add_step(step(t - 0.3, cams=("right",)))  # three steps behind, rising
    assert buf.counters["time_jump_resets"] == lagging.counters["time_jump_resets"] == 0
    w = lagging.add_step(step(3.0))
    assert w is not None and sum(f.camera == "right" for f in w.frames) == 18
