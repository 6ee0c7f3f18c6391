"""Smoke tests of `python -m bench soak`: the ledger counts right, and a short soak with
one fault of each proxy/rabbitmqctl kind loses nothing and writes its JSON and PNG.
Counts only: speed is the benchmark's business, never a test's."""

from __future__ import annotations

import json

import pytest

from bench.soak.command import add_arguments
from bench.soak.plot import plot
from bench.soak.run import Ledger, Soak


def test_ledger_counts_unique_duplicates_and_the_never_consumed():
    ledger = Ledger(4)
    for i in (0, 1, 1, 3, 7, 7, 7):  # 7 is past the capacity: the ledger grows
        ledger.consumed(i)
    assert ledger.unique == 4
    assert ledger.duplicates == 3
    assert ledger.never_consumed(9, excluded={5}) == [2, 4, 6, 8]
    for _ in range(300):  # a byte per id saturates, the duplicate count does not
        ledger.consumed(0)
    assert ledger.counts[0] == 255 and ledger.duplicates == 303


def test_soak_arguments_default_to_ten_minutes_and_docs_soak_png():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert args.minutes == 10 and args.interval == 30 and args.plot.name == "soak.png"


@pytest.mark.rabbitmq
@pytest.mark.fault
async def test_a_short_soak_through_three_faults_loses_nothing(broker_url, tmp_path):
    soak = Soak(
        broker_url,
        minutes=0.4,
        rate=1000,  # given: no calibration run
        calibrate_messages=0,
        interval=6,
        faults=["cut", "close", "freeze"],
        heartbeat=2,
        sample=0.5,
    )
    result = await soak.run()
    summary = result["summary"]
    print(json.dumps(summary))
    assert summary["lost"] == 0 and summary["unsettled"] == 0
    assert summary["faults_by_kind"] == {"cut": 1, "close": 1, "freeze": 1}
    assert summary["fault_errors"] == 0 and summary["faults_not_recovered"] == 0
    assert summary["reconnects"] >= 5  # cut: 2, close: 1, freeze: 2
    assert summary["sent"] > 0 and summary["confirmed"] == summary["sent"]
    assert summary["consumed"] == summary["sent"]
    assert summary["seq_mapping_ok"] and summary["ok"]
    assert len(result["samples"]) > 10
    png = tmp_path / "soak.png"
    plot(result, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
