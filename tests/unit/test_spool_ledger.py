"""The spool's ledger of delivered segment keys (what lets a replay or a resend store nothing twice) is
bounded while the process runs, not only pruned at its next start: a sidecar up for weeks at hundreds of
runs a second would otherwise fill its disk with keys."""

from __future__ import annotations

import sqlite3

from otel_context.delivery.spool import KNOWN, Spool


def deliver(spool: Spool, names: list[str]) -> None:
    """Spool these runs and settle them as delivered, as the delivery workers do."""
    seqs = spool.add((name, "thread", b"{}", name) for name in names)
    spool.remove_all([seq for seq in seqs if seq], delivered=names)


def ledger_keys(spool: Spool) -> int:
    with sqlite3.connect(spool.path) as db:
        return db.execute("SELECT COUNT(*) FROM delivered").fetchone()[0]


def test_the_ledger_keeps_its_bound_while_keys_come(tmp_path):
    spool = Spool(tmp_path, 10_000_000, ledger_max_keys=100)
    for batch in range(100):
        deliver(spool, [f"run-{batch}-{n}" for n in range(10)])
    assert 100 <= ledger_keys(spool) <= 110  # passes the bound by one pruning interval at most
    assert spool.add([("again", "thread", b"{}", "run-99-9")]) == [KNOWN]  # the newest keys are kept
    assert spool.add([("again", "thread", b"{}", "run-0-0")]) != [KNOWN]  # the oldest went
    spool.close()


def test_a_start_trims_a_ledger_past_its_bound(tmp_path):
    spool = Spool(tmp_path, 10_000_000, ledger_max_keys=1_000)
    for batch in range(50):  # a batch's keys share their time: the oldest batches go first
        deliver(spool, [f"run-{batch}-{n}" for n in range(10)])
    spool.close()
    assert ledger_keys(spool) == 500
    reopened = Spool(tmp_path, 10_000_000, ledger_max_keys=50)
    assert ledger_keys(reopened) == 50
    assert reopened.add([("again", "thread", b"{}", "run-49-9")]) == [KNOWN]
    assert reopened.add([("again", "thread", b"{}", "run-44-9")]) != [KNOWN]
    reopened.close()
