"""The cascade's stages one by one, on hand-made records (no model, no broker)."""

from __future__ import annotations

from decimal import Decimal

from reconcile.cascade import new_pool, run_cascade
from reconcile.config import MatchConfig
from reconcile.models import BreakReason, Stage, Status
from reconcile.windows import Reconciler
from tests.reconcile.builders import ledger, statement

CFG = MatchConfig()
PAIR = "core-ledger~bank-statement"


def cascade(left, right, **kwargs):
    return run_cascade(new_pool(PAIR, left, right), CFG, **kwargs)


def only_match(pool):
    assert len(pool.matches) == 1, pool.matches
    return pool.matches[0]


def test_exact_one_to_one_on_reference_amount_currency():
    a, b = ledger("RF1234567890123", "-100.00"), statement("rf-1234 5678 90123", "-100.00")
    m = only_match(cascade([a], [b]))
    assert (m.stage, m.status, m.kind, m.score) == (Stage.EXACT, Status.MATCHED, "1:1", 1.0)
    assert m.left_ids == (a.record_id,) and m.right_ids == (b.record_id,)


def test_other_account_or_currency_never_matches():
    a = ledger("RF1234567890123", "100.00")
    pool = cascade([a], [statement("RF1234567890123", "100.00", account="A2"),
                         statement("RF1234567890123", "100.00", currency="USD")])
    assert pool.matches == []


def test_split_payment_is_one_to_many_by_shared_reference():
    a = ledger("RF1111111111111", "300.00")
    parts = [statement("RF1111111111111", x) for x in ("100.00", "150.00", "50.00")]
    m = only_match(cascade([a], parts))
    assert (m.stage, m.kind, m.rule) == (Stage.EXACT, "1:N", "reference group, equal total")


def test_batch_line_listing_invoice_references_is_many_to_one():
    invoices = [ledger(f"RF22222222222{i}", x) for i, x in enumerate(("10.00", "20.00", "30.00"))]
    line = statement("BATCH1", "60.00", memo="COLLECTIVE RF222222222220 RF222222222221 RF222222222222")
    m = only_match(cascade(invoices, [line]))
    assert (m.stage, m.kind) == (Stage.EXACT, "N:1")
    assert m.rule.startswith("remittance lists references")


def test_fx_difference_within_tolerance_matches_at_tolerance_stage():
    m = only_match(cascade([ledger("RF3333333333333", "1000.00")], [statement("RF3333333333333", "1003.10")]))
    assert m.stage is Stage.TOLERANCE and m.difference == Decimal("3.10")


def test_truncated_reference_and_weekend_shift():
    a = ledger("RF4444444444444444", "75.00", "2026-03-07")  # a Saturday
    b = statement("RF4444444444", "75.00", "2026-03-09")
    m = only_match(cascade([a], [b]))
    assert m.stage is Stage.TOLERANCE and "prefix" in m.rule


def test_subset_sum_without_references_is_many_to_one():
    invoices = [ledger(f"RF55555555555{i}", x, counterparty="Contoso AG")
                for i, x in enumerate(("12.50", "40.00", "7.25"))]
    noise = ledger("RF5555555555559", "33.00", counterparty="Contoso AG")
    line = statement("BATCH9", "59.75", counterparty="CONTOSO A.G.", memo="COLLECTIVE PAYMENT")
    m = only_match(cascade([*invoices, noise], [line]))
    assert (m.stage, m.rule, m.kind) == (Stage.TOLERANCE, "subset-sum of one counterparty", "N:1")
    assert set(m.left_ids) == {r.record_id for r in invoices}


def test_fuzzy_separates_twins_by_counterparty_text():
    acme = ledger("RF6666666666661", "250.00", counterparty="Acme GmbH", memo="rent March")
    trey = ledger("RF6666666666662", "250.00", counterparty="Trey Research AB", memo="consulting fees")
    s_trey = statement("NONREF", "250.00", counterparty="TREY RESEARCH A.B.", memo="CONSULTING FEES")
    s_acme = statement("NONREF", "250.00", counterparty="Acme G.m.b.H.", memo="RENT MARCH")
    pool = cascade([acme, trey], [s_trey, s_acme])
    pairs = {(m.left_ids, m.right_ids): m for m in pool.matches}
    assert set(pairs) == {((acme.record_id,), (s_acme.record_id,)), ((trey.record_id,), (s_trey.record_id,))}
    assert all(m.stage is Stage.FUZZY for m in pool.matches)


def test_model_score_is_injected_and_can_demote_to_suggested():
    a = ledger("RF7777777777771", "250.00", counterparty="Acme GmbH", memo="rent")
    b = statement("NONREF", "250.00", counterparty="Fabrikam Inc", memo="invoice 9")
    c = statement("NONREF", "250.00", counterparty="Litware Oy", memo="invoice 8")
    seen = []

    def scorer(pairs):
        seen.extend(pairs)
        return [0.99 if right == "invoice 9" else 0.0 for _, right in pairs]

    pool = cascade([a], [b, c], similarity=scorer)
    assert seen, "the fuzzy stage asks the injected scorer"
    m = only_match(pool)
    assert m.right_ids == (b.record_id,) and m.status is Status.SUGGESTED


def test_fuzzy_off_leaves_ambiguous_records():
    a = ledger("RF8888888888881", "250.00")
    pool = cascade([a], [statement("NONREF", "250.00"), statement("NONREF", "250.00", memo="other")],
                   fuzzy=False)
    assert pool.matches == [] and len(pool.right) == 2


def test_reversal_pairs_on_one_side():
    pay = ledger("RF9999999999999", "-80.00")
    rev = ledger("REV RF9999999999999", "80.00", "2026-03-03")
    m = only_match(cascade([pay, rev], []))
    assert m.stage is Stage.REVERSAL and set(m.left_ids) == {pay.record_id, rev.record_id}


def test_breaks_at_window_close_name_their_reason():
    rc = Reconciler(CFG, pairings=[("core-ledger", "bank-statement")])
    lone = ledger("RF1010101010101", "10.00")
    differs_l = ledger("RF2020202020202", "500.00")
    differs_s = statement("RF2020202020202", "530.00")
    dup_a = statement("RF3030303030303", "5.00")
    dup_b = statement("RF3030303030303", "5.00")
    rc.add([lone, differs_l, differs_s, dup_a, dup_b, ledger("RF3030303030303", "5.00")])
    result = rc.flush()
    reasons = {b.record_id: (b.reason, b.detail) for b in result.breaks}
    assert reasons[lone.record_id] == (BreakReason.MISSING, "missing on bank-statement")
    assert reasons[differs_l.record_id] == (BreakReason.AMOUNT_DIFFERS, "amount differs by +30.00")
    assert reasons[differs_s.record_id] == (BreakReason.AMOUNT_DIFFERS, "amount differs by -30.00")
    assert reasons[dup_b.record_id][0] is BreakReason.DUPLICATE
    assert len(result.matches) == 1 and result.matches[0].right_ids == (dup_a.record_id,)


def test_windows_wait_for_late_partner_and_late_duplicate_is_seen():
    rc = Reconciler(CFG, pairings=[("core-ledger", "bank-statement")])
    a = ledger("RF4040404040404", "42.00", "2026-03-02")
    rc.add([a])
    assert rc.step().breaks == []  # window still open
    b = statement("RF404040404040", "42.00", "2026-03-04")  # truncated: tolerance stage
    rc.add([b, ledger("X", "1.00", "2026-03-10")])
    assert rc.step().matches == []  # looser stages wait for the window to close
    rc.add([ledger("Y", "1.00", "2026-03-20")])
    assert [m.stage for m in rc.step().matches] == [Stage.TOLERANCE]
    copy = statement("RF404040404040", "42.00", "2026-03-04", record_id="copy")
    rc.add([copy])
    assert [b.reason for b in rc.step().breaks if b.record_id == "copy"] == [BreakReason.DUPLICATE]


def test_state_round_trip_resumes_the_same():
    rc = Reconciler(CFG, pairings=[("core-ledger", "bank-statement")])
    a = ledger("RF5050505050505", "42.00")
    rc.add([a])
    again = Reconciler(CFG, pairings=[("core-ledger", "bank-statement")])
    again.restore(rc.state())
    again.add([statement("RF5050505050505", "42.00")])
    assert [m.left_ids for m in again.step().matches] == [(a.record_id,)]
