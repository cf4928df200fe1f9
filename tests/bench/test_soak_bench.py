"""The soak benchmark's figures from its samples: growth per part, its slope, flatness, a part that exited,
and the bytes written to the broker."""

from __future__ import annotations

import pytest

from bench import soak


def _sample(minute: int, rss_mb: dict[str, float], telemetry_records: int) -> soak.Sample:
    return soak.Sample(60.0 * minute, {part: round(mb * 1024) for part, mb in rss_mb.items()}, coverage=1.0,
                       freshness_s=1.5, telemetry_lag=100, load_avg=12.0,
                       records={"telemetry.raw": telemetry_records, "twin.status": 10 * minute})


def test_growth_slope_flatness_and_exits_per_part() -> None:
    # The broker grows steadily, the gateway wobbles, the telemetry flow steps up once (a backlog's
    # high-water mark) and stays, the forecast service exits.
    samples = [_sample(m, {"broker": 100 + 2 * m, "gateway": 100 + (m % 2), "forecast": 180,
                           "telemetry": 150 if m < 10 else 180}, 60_000 * m)
               for m in range(30)]
    samples.append(_sample(30, {"broker": 160, "gateway": 101, "telemetry": 180}, 60_000 * 30))
    figures = soak.figures_of(samples, {"telemetry.raw": 110.0, "twin.status": 50.0})
    assert figures["soak_minutes"] == 30.0
    assert figures["rss_growth_pct_broker"] == 60.0 and figures["flat_broker"] == 0.0
    assert figures["rss_mb_per_h_broker"] == pytest.approx(120.0, rel=0.01)
    assert figures["rss_mb_per_h_late_broker"] == pytest.approx(120.0, rel=0.05)
    assert figures["rss_growth_pct_gateway"] == 1.0 and figures["flat_gateway"] == 1.0
    assert figures["rss_growth_pct_telemetry"] == 20.0 and figures["rss_mb_per_h_late_telemetry"] == 0.0
    assert figures["exited_forecast"] == 1.0 and "flat_forecast" not in figures
    # 1,800,000 telemetry records of 110 bytes and 300 of 50 bytes in half an hour.
    written_mb = (1_800_000 * 110 + 300 * 50) / 2**20
    assert figures["broker_written_mb_per_h"] == pytest.approx(2 * written_mb, abs=0.01)
    assert figures["telemetry_records_per_h"] == 3_600_000


def test_no_samples_no_growth() -> None:
    assert soak.figures_of([], {}) == {"samples": 0.0, "flat_pct": soak.FLAT_PCT}
    assert soak.slope_per_h([0.0], [1.0]) == 0.0


def test_each_sample_is_reported_with_the_largest_parts(capsys: pytest.CaptureFixture[str]) -> None:
    sample = _sample(3, {"broker": 300.0, "gateway": 120.0, "redis": 10.0, "api": 80.0, "simulator": 90.0},
                     telemetry_records=1_000)
    soak._report(sample, 3, 60)
    line = capsys.readouterr().err
    assert line.startswith("soak minute 3/60: coverage 100.0%")
    assert "broker 300 MB, gateway 120 MB, simulator 90 MB, api 80 MB" in line and "redis" not in line
