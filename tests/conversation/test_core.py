"""Table tests of the pure core: every phase against every kind of event."""

from __future__ import annotations

import pytest

from batchjob import DEFAULT_MODE, DEFAULT_MODEL
from conversation import core
from conversation.choices import parse_choice as _parse
from conversation.events import (
    ButtonPressed,
    CancelJob,
    Cleanup,
    CommandReceived,
    Details,
    Download,
    EffectFailed,
    Expired,
    FetchUrl,
    FileMissing,
    FileReady,
    FileReceived,
    Inspect,
    Inspected,
    InspectResumed,
    JobStatus,
    ListJobs,
    LookupRows,
    OpenPath,
    Precheck,
    Prechecked,
    Reconcile,
    Reconciled,
    Reply,
    ResolveFailed,
    RowsKnown,
    SendTemplates,
    ServiceFailed,
    Submit,
    Submitted,
    TextReceived,
    Upload,
    Uploaded,
    Watch,
)
from conversation.spending_events import ShortfallNotice
from conversation.state import ChatState, Pending

ADMIN = 7


def ctx(now=1_000_000, new_id="abcdef0123456789", paths=False):
    return core.Context(now_ms=now, new_id=new_id, allow_local_paths=paths, admins=frozenset({ADMIN}))


def keys(effects):
    return [k for e in effects if isinstance(e, Reply) for k, _ in e.parts]


def kinds(effects):
    return [type(e).__name__ for e in effects]


def at(phase, **pending):
    p = Pending(token="tok12345", created_ms=999_000, filename="p.csv", **pending)
    return ChatState(phase=phase, pending=p, recent=["job_1"], jobs=["job_1"])


REPORT_OK = {
    "format": "csv",
    "rows": {"total": 2, "valid": 2, "invalid": 0, "skipped": 0},
    "columns": [{"name": "prompt", "field": "prompt"}, {"name": "x", "field": None}],
    "errors": [],
    "warning_counts": {},
    "fatal": None,
}
REPORT_BAD = {
    **REPORT_OK,
    "rows": {"total": 3, "valid": 1, "invalid": 2, "skipped": 0},
    "errors": [{"row": i, "message": f"Row {i}: bad"} for i in (2, 3)],
}


# --- the happy path, step by step ---------------------------------------------------------


def test_a_large_files_report_goes_before_its_upload():
    big = {**REPORT_OK, "rows": {"total": 20_000, "valid": 20_000, "invalid": 0, "skipped": 0}}
    s, _ = core.step(ChatState(), FileReceived("ref1", "p.csv", 100), ctx())
    s, _ = core.step(s, FileReady("/m/a.csv", "p.csv"), ctx())
    s, fx = core.step(s, Inspected(big, "/m/a.jsonl"), ctx())
    assert kinds(fx) == ["Reply", "Upload"]  # told at once: its upload may take a while
    assert keys(fx) == ["flow.report", "flow.columns_used", "flow.columns_unused"]
    s, _ = core.step(s, Uploaded("file_1", 20_000), ctx())
    s, fx = core.step(s, Prechecked({"estimated_cost": 4.0, "balance": 10.0, "sufficient": True}), ctx())
    assert keys(fx) == ["flow.uploaded", "flow.estimate", "flow.confirm"]  # not reported twice


@pytest.mark.parametrize("step", ["upload", "precheck"])
def test_a_report_held_for_the_estimate_goes_out_when_the_flow_ends_before_it(step):
    s, _ = core.step(ChatState(), FileReceived("ref1", "p.csv", 100), ctx())
    s, _ = core.step(s, FileReady("/m/a.csv", "p.csv"), ctx())
    s, _ = core.step(s, Inspected(REPORT_OK, "/m/a.jsonl"), ctx())
    if step == "precheck":
        s, _ = core.step(s, Uploaded("file_1", 2), ctx())
    s, fx = core.step(s, ServiceFailed(step, "unavailable", "503"), ctx())
    assert s.phase == "idle"
    assert kinds(fx)[:2] == ["Reply", "Reply"]
    assert keys(fx[:1]) == ["flow.report", "flow.columns_used", "flow.columns_unused"]


def test_happy_path():
    s = ChatState()
    s, fx = core.step(s, FileReceived("ref1", "p.csv", 100), ctx())
    assert s.phase == "resolving" and fx == [Download("ref1", "p.csv")]
    s, fx = core.step(s, FileReady("/m/a.csv", "p.csv"), ctx())
    assert s.phase == "inspecting" and fx == [Inspect("/m/a.csv", "p.csv")]
    s, fx = core.step(s, Inspected(REPORT_OK, "/m/a.jsonl"), ctx())
    assert s.phase == "uploading" and kinds(fx) == ["Upload"]  # a small file: reported with its estimate
    s, fx = core.step(s, Uploaded("file_1", 2), ctx())
    assert s.phase == "prechecking" and fx[-1] == Precheck(2, DEFAULT_MODEL, DEFAULT_MODE)
    s, fx = core.step(s, Prechecked({"estimated_cost": 0.04, "balance": 10.0, "sufficient": True}), ctx())
    assert s.phase == "awaiting_confirm" and kinds(fx) == ["Reply"]
    assert keys(fx) == [
        *("flow.report", "flow.columns_used", "flow.columns_unused"),
        *("flow.uploaded", "flow.estimate", "flow.confirm"),
    ]
    assert fx[0].buttons[0][0].data == f"c:go:{s.pending.token}"
    assert all(len(b.data.encode()) <= 64 for row in fx[0].buttons for b in row)
    s, fx = core.step(s, TextReceived("fast google/gemini-2.5-flash-image"), ctx(new_id="intent0001"))
    assert s.phase == "submitting"
    assert fx[-1] == Submit("intent0001", "file_1", "google/gemini-2.5-flash-image", "fast", 2, 0.04)
    s, fx = core.step(s, Submitted("job_9"), ctx())
    assert s.phase == "idle" and s.pending is None and s.jobs == ["job_9"] and s.recent == ["job_9"]
    # The job is announced by the message that then shows its progress.
    announce = Reply.of("flow.submitted", job_id="job_9", model="google/gemini-2.5-flash-image", mode="fast")
    # The estimate, for /jobs; where the input came from, to run its failed rows again.
    source = '{"kind": "channel", "ref": "ref1", "name": "p.csv"}'
    assert Watch("job_9", "intent0001", 2, announce, cost="0.04", source=source) in fx
    assert not any(isinstance(e, Reply) for e in fx)  # no second message for the same news
    assert any(isinstance(e, Cleanup) and "/m/a.jsonl" in e.paths for e in fx)


def test_caption_with_model_and_mode_submits_without_asking():
    s, _ = core.step(ChatState(), FileReceived("r", "p.csv", 1, caption="standard vendor/model-x"), ctx())
    s = s.model_copy(update={"phase": "prechecking"})
    s.pending.file_id, s.pending.row_count = "file_1", 3
    s, fx = core.step(s, Prechecked({"sufficient": True}), ctx(new_id="i2"))
    assert s.phase == "submitting" and fx[-1] == Submit("i2", "file_1", "vendor/model-x", "standard", 3)


def test_caption_does_not_submit_when_balance_is_short():
    s, _ = core.step(ChatState(), FileReceived("r", "p.csv", 1, caption="fast"), ctx())
    s.phase, s.pending.file_id, s.pending.row_count = "prechecking", "file_1", 3
    s, fx = core.step(s, Prechecked({"sufficient": False}), ctx())
    assert s.phase == "awaiting_confirm" and "flow.estimate_shortfall" in keys(fx)
    asked = next(e for e in fx if isinstance(e, Reply))
    assert not any(b.label == "btn.submit" for row in asked.buttons for b in row)
    # Check again instead; the admins are told (once per episode: the runner keeps count).
    assert next(b.data for row in asked.buttons for b in row) == f"c:chk:{s.pending.token}"
    assert isinstance(fx[-1], ShortfallNotice)


def test_estimate_only_caption_stops_after_precheck():
    s, _ = core.step(ChatState(), FileReceived("r", "p.csv", 1, caption="预估"), ctx())
    s.phase, s.pending.file_id, s.pending.row_count = "prechecking", "file_1", 3
    s, fx = core.step(s, Prechecked({"estimated_cost": 1}), ctx())
    assert s.phase == "idle" and "flow.estimate_only_done" in keys(fx)
    assert not any(isinstance(e, Submit) for e in fx)


@pytest.mark.parametrize("text", ["ok", "确认", "fast", "google/gemini-2.5-flash-image"])
def test_confirm_replies(text):
    s, fx = core.step(at("awaiting_confirm", file_id="file_1", row_count=2), TextReceived(text), ctx())
    assert s.phase == "submitting" and isinstance(fx[-1], Submit)


def test_unrelated_reply_while_confirming_only_hints():
    s, fx = core.step(at("awaiting_confirm", file_id="file_1", row_count=2), TextReceived("hmm?"), ctx())
    assert s.phase == "awaiting_confirm" and keys(fx) == ["flow.confirm_hint"]


def test_buttons_change_model_and_mode():
    s = at("awaiting_confirm", file_id="file_1", row_count=2)
    s, fx = core.step(s, ButtonPressed("c:model:tok12345"), ctx())
    assert s.phase == "awaiting_model"
    s, fx = core.step(s, TextReceived("other/model-2"), ctx())
    assert s.phase == "prechecking" and fx == [Precheck(2, "other/model-2", DEFAULT_MODE)]
    s, fx = core.step(s, Prechecked({"estimated_cost": 0.1}), ctx())
    assert s.phase == "awaiting_confirm" and s.pending.model == "other/model-2"
    s, fx = core.step(s, ButtonPressed("c:mode:tok12345"), ctx())
    s, fx = core.step(s, TextReceived("nonsense"), ctx())
    assert s.phase == "awaiting_mode" and keys(fx) == ["flow.mode_unknown", "flow.ask_mode"]
    s, fx = core.step(s, TextReceived("standard"), ctx())
    assert fx == [Precheck(2, "other/model-2", "standard")]
    s, fx = core.step(s, Prechecked({"estimated_cost": 0.2}), ctx())
    assert s.phase == "awaiting_confirm" and s.pending.mode == "standard" and "flow.uploaded" not in keys(fx)
    s, fx = core.step(s, ButtonPressed("c:go:tok12345"), ctx(new_id="i3"))
    assert fx[-1] == Submit("i3", "file_1", "other/model-2", "standard", 2, 0.2)


def test_estimate_only_button_and_drop():
    s, fx = core.step(
        at("awaiting_confirm", file_id="file_1", row_count=2), ButtonPressed("c:est:tok12345"), ctx()
    )
    assert s.phase == "idle" and keys(fx) == ["flow.estimate_only_done"]
    s, fx = core.step(at("awaiting_fix"), ButtonPressed("c:drop:tok12345"), ctx())
    assert s.phase == "idle" and keys(fx) == ["flow.dropped"]


@pytest.mark.parametrize("data", ["c:go:wrongtok", "c:go", "zz", "c:go:tok12345:x", "", "j:r:job_other"])
def test_stale_or_forged_buttons_do_nothing(data):
    before = at("awaiting_confirm", file_id="file_1", row_count=2)
    s, fx = core.step(before, ButtonPressed(data), ctx())
    assert s == before and not any(isinstance(e, Submit | CancelJob) for e in fx)


def test_invalid_rows_then_valid_only():
    s = at("inspecting")
    s, fx = core.step(s, Inspected(REPORT_BAD, "/m/v.jsonl"), ctx())
    assert s.phase == "awaiting_fix" and not any(isinstance(e, Upload) for e in fx)
    assert "flow.invalid_rows" in keys(fx) and "Row 2: bad" in str(fx[0].parts)
    s, fx = core.step(s, ButtonPressed("c:valid:tok12345"), ctx())
    assert s.phase == "uploading" and fx[-1] == Upload("/m/v.jsonl", "p.csv", DEFAULT_MODE)


def test_long_error_list_goes_out_as_a_file():
    report = {
        **REPORT_BAD,
        "rows": {"total": 30, "valid": 5, "invalid": 25, "skipped": 0},
        "errors": [{"row": i, "column": "prompt", "message": f"Row {i}: bad"} for i in range(25)],
    }
    _, fx = core.step(at("inspecting"), Inspected(report, "/m/v.jsonl"), ctx())
    assert fx[0].document is not None and len(fx[0].document) == 25
    assert "flow.more_errors_in_file" in keys(fx)


def test_no_valid_rows_ends_the_flow():
    report = {**REPORT_BAD, "rows": {"total": 2, "valid": 0, "invalid": 2, "skipped": 0}}
    s, fx = core.step(at("inspecting"), Inspected(report, None), ctx())
    assert s.phase == "idle" and "flow.no_valid_rows" in keys(fx)


def test_fatal_report_ends_the_flow():
    report = {**REPORT_OK, "fatal": {"code": "no_prompt_column", "message": "No prompt column"}}
    s, fx = core.step(at("inspecting", path="/m/x.csv"), Inspected(report, None), ctx())
    assert s.phase == "idle" and keys(fx) == ["flow.file_unusable"]
    assert any(isinstance(e, Cleanup) and "/m/x.csv" in e.paths for e in fx)


def test_upload_failure_ends_the_run():
    s, fx = core.step(at("uploading"), ServiceFailed("upload", "validation", "unsupported schema"), ctx())
    assert s.phase == "idle" and s.pending is None and keys(fx) == ["error.validation"]


def test_zero_rows_never_submitted():
    s, fx = core.step(at("uploading", valid=0), Uploaded("file_1", 0), ctx())
    assert s.phase == "idle" and keys(fx) == ["flow.nothing_to_submit"]
    s, fx = core.step(at("awaiting_confirm", file_id="file_1", row_count=0), TextReceived("ok"), ctx())
    assert not any(isinstance(e, Submit) for e in fx)


def test_submit_failures_are_never_repeated():
    s, fx = core.step(
        at("submitting", file_id="f", row_count=1, intent_id="i"),
        ServiceFailed("submit", "unavailable", "503"),
        ctx(),
    )
    assert s.phase == "idle" and keys(fx) == ["error.unavailable", "flow.submit_not_repeated"]
    assert not any(isinstance(e, Submit) for e in fx)
    s, fx = core.step(
        at("submitting", file_id="f", row_count=1, intent_id="i"),
        ServiceFailed("submit", "balance", "", {"current": "1", "required": "2", "shortfall": "1"}),
        ctx(),
    )
    # Refused for the balance: not repeated either; the question stays, with Check again.
    assert keys(fx)[0] == "balance.submit_refused" and s.phase == "awaiting_confirm"
    assert not any(isinstance(e, Submit) for e in fx)


def test_unknown_submit_is_reconciled_not_resubmitted():
    s, fx = core.step(
        at("submitting", file_id="f", row_count=1, intent_id="i"),
        ServiceFailed("submit", "unknown", "timeout"),
        ctx(),
    )
    assert s.phase == "reconciling" and fx[-1] == Reconcile("i", "f")
    s2, fx2 = core.step(s, Reconciled("job_x"), ctx())
    assert s2.phase == "idle" and s2.jobs[-1] == "job_x" and any(isinstance(e, Watch) for e in fx2)
    s3, fx3 = core.step(s, Reconciled(None), ctx())
    assert s3.phase == "idle" and keys(fx3) == ["flow.submit_unknown_not_found"]
    assert not any(isinstance(e, Submit) for e in fx2 + fx3)


def test_fallback_offers_url_and_file_id_and_path_only_when_configured():
    s, fx = core.step(ChatState(), FileReceived("r", "big.xlsx", 10**9, too_large=True), ctx())
    assert s.phase == "awaiting_input" and not any(isinstance(e, Download) for e in fx)
    assert keys(fx) == [
        "fallback.reason.too_large",
        "fallback.ask",
        "fallback.url",
        "fallback.file_id",
        "fallback.drop",
    ]
    _, fx = core.step(ChatState(), FileReceived("r", "big.xlsx", 10**9, too_large=True), ctx(paths=True))
    assert "fallback.path" in keys(fx)
    s, fx = core.step(s, TextReceived("https://example.com/p.xlsx"), ctx())
    assert s.phase == "resolving" and fx == [FetchUrl("https://example.com/p.xlsx")]


def test_download_failure_falls_back():
    s, fx = core.step(at("resolving"), ResolveFailed("download_failed"), ctx())
    assert s.phase == "awaiting_input" and keys(fx)[0] == "fallback.reason.download_failed"


def test_file_id_path_uses_a_known_count_and_never_asks_the_user_to_count():
    s, fx = core.step(ChatState(), TextReceived("file_abc12345"), ctx())
    assert s.phase == "awaiting_count" and fx == [LookupRows("file_abc12345")]
    s2, fx2 = core.step(s, RowsKnown("file_abc12345", 12, "job", "job_9"), ctx())
    assert s2.phase == "prechecking" and fx2 == [Precheck(12, DEFAULT_MODEL, DEFAULT_MODE)]
    s2, fx2 = core.step(s2, Prechecked({"estimated_cost": 1.0}), ctx())
    assert keys(fx2)[0] == "flow.count_from_job" and fx2[0].parts[0][1]["job_id"] == "job_9"
    s3, fx3 = core.step(s, RowsKnown("file_abc12345", None), ctx())
    assert s3.phase == "idle" and keys(fx3) == ["flow.file_id_count_unknown"]
    s4, fx4 = core.step(s, TextReceived("40"), ctx())  # while the lookup runs: no number taken
    assert s4.phase == "awaiting_count" and keys(fx4) == ["flow.busy"]
    legacy = s.model_copy(deep=True)
    legacy.pending.count_asked = True  # asked by an earlier release
    s5, fx5 = core.step(legacy, TextReceived("40"), ctx())
    assert s5.phase == "idle" and keys(fx5) == ["flow.file_id_count_unknown"]


def test_local_paths_only_when_configured():
    _, fx = core.step(ChatState(), TextReceived("MEDIA:/srv/in/p.csv"), ctx())
    assert keys(fx) == ["fallback.path_disabled"]
    s, fx = core.step(ChatState(), TextReceived("MEDIA:/srv/in/p.csv"), ctx(paths=True))
    assert s.phase == "resolving" and fx == [OpenPath("/srv/in/p.csv")]


def test_new_file_while_jobs_run_starts_a_new_flow():
    s = ChatState(jobs=["job_1", "job_2"], recent=["job_2", "job_1"])
    s, _fx = core.step(s, FileReceived("r", "p.csv", 1), ctx())
    assert s.phase == "resolving" and s.jobs == ["job_1", "job_2"]


def test_new_file_replaces_a_pending_one_but_not_during_submit():
    s, fx = core.step(at("awaiting_confirm", file_id="f"), FileReceived("r2", "q.csv", 1), ctx())
    assert s.pending.filename == "q.csv" and keys(fx) == ["flow.replaced"]
    s, fx = core.step(at("submitting", file_id="f"), FileReceived("r2", "q.csv", 1), ctx())
    assert s.phase == "submitting" and keys(fx) == ["flow.busy_submitting"]


def test_pending_input_expires():
    s = at("awaiting_confirm", file_id="f")
    s, fx = core.step(s, TextReceived("ok"), ctx(now=999_000 + 3_600_001))
    assert s.phase == "idle" and keys(fx)[0] == "flow.expired"
    assert not any(isinstance(e, Submit) for e in fx)


def test_commands():
    s = ChatState(recent=["job_1"], jobs=["job_1"])
    assert kinds(core.step(s, CommandReceived("template"), ctx())[1]) == ["SendTemplates"]
    s2, _fx = core.step(s, CommandReceived("lang", ("zh",)), ctx())
    assert s2.lang == "zh" and s2.lang_fixed
    assert keys(core.step(s, CommandReceived("lang", ("fr",)), ctx())[1]) == ["cmd.lang_usage"]
    assert core.step(s, CommandReceived("status"), ctx())[1] == [JobStatus(None)]
    assert core.step(s, CommandReceived("status", ("job_1",)), ctx())[1] == [JobStatus("job_1")]
    assert keys(core.step(s, CommandReceived("status", ("job_other",)), ctx())[1]) == ["flow.unknown_job"]
    assert core.step(s, CommandReceived("status", ("job_other",), ADMIN), ctx())[1] == [
        JobStatus("job_other")
    ]
    assert core.step(s, CommandReceived("jobs", ("2", "running"), ADMIN), ctx())[1] == [
        ListJobs(admin=True, page=2, status="running")
    ]
    assert core.step(s, CommandReceived("jobs", ("running",), 5), ctx())[1] == [ListJobs(admin=False)]
    assert core.step(s, CommandReceived("details", ("job_1",)), ctx())[1] == [Details("job_1")]
    assert keys(core.step(s, CommandReceived("nope"), ctx())[1]) == ["cmd.unknown"]
    assert keys(core.step(s, CommandReceived("help"), ctx())[1]) == ["cmd.help"]


def test_cancel_is_for_admins_and_asks_first():
    s = ChatState()
    s1, fx = core.step(s, CommandReceived("cancel", ("job_1", "too", "slow"), user_id=5), ctx())
    assert keys(fx) == ["cmd.cancel_refused"] and s1 == s
    s2, fx = core.step(s, CommandReceived("cancel", ("job_1", "too", "slow"), user_id=ADMIN), ctx())
    assert keys(fx) == ["cmd.cancel_confirm"] and not any(isinstance(e, CancelJob) for e in fx)
    yes = fx[0].buttons[0][0].data
    _, fx = core.step(s2, ButtonPressed(yes, user_id=5), ctx())
    assert keys(fx) == ["cmd.cancel_refused"]
    _, fx = core.step(s2, ButtonPressed(yes, user_id=ADMIN), ctx())
    assert fx == [CancelJob("job_1", "too slow")]
    _, fx = core.step(s2, ButtonPressed(fx and "k:n:job_1", user_id=ADMIN), ctx())
    assert keys(fx) == ["cmd.cancel_aborted"]


UNEXPECTED = [
    FileReady("/m/x", "x"),
    ResolveFailed("download_failed"),
    Inspected(REPORT_OK, None),
    Uploaded("f", 1),
    Prechecked({}),
    Submitted("job_z"),
    Reconciled("job_z"),
    RowsKnown("file_x", 3),
    ServiceFailed("upload", "unavailable"),
    ServiceFailed("precheck", "unavailable"),
    ServiceFailed("submit", "unknown"),
    Expired(),
]
PHASES = [
    "idle",
    "resolving",
    "awaiting_input",
    "inspecting",
    "awaiting_fix",
    "uploading",
    "awaiting_count",
    "prechecking",
    "awaiting_confirm",
    "awaiting_model",
    "awaiting_mode",
    "submitting",
    "reconciling",
]
EXPECTED = {
    ("resolving", "FileReady"),
    ("awaiting_input", "FileReady"),
    ("resolving", "ResolveFailed"),
    ("awaiting_input", "ResolveFailed"),
    ("inspecting", "Inspected"),
    ("uploading", "Uploaded"),
    ("prechecking", "Prechecked"),
    ("submitting", "Submitted"),
    ("reconciling", "Submitted"),
    ("reconciling", "Reconciled"),
    ("uploading", "ServiceFailed"),
    ("prechecking", "ServiceFailed"),
    ("submitting", "ServiceFailed"),
    ("awaiting_count", "RowsKnown"),
}


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("event", UNEXPECTED, ids=lambda e: type(e).__name__ + ":" + getattr(e, "step", ""))
def test_every_phase_against_every_result_event(phase, event):
    """A result arriving in the wrong phase (late, duplicated, forged) changes nothing and sends no job."""
    state = at(phase, file_id="file_x", row_count=1, intent_id="i")
    if phase == "idle":
        state = ChatState(recent=["job_1"])
    new, fx = core.step(state, event, ctx())
    expected = (phase, type(event).__name__) in EXPECTED
    if isinstance(event, ServiceFailed):
        expected = (
            expected
            and {"upload": "uploading", "precheck": "prechecking", "submit": "submitting"}[event.step]
            == phase
        )
    if not expected:
        assert new.phase == state.phase and new.pending == state.pending
        assert not any(isinstance(e, Submit | Upload | Precheck) for e in fx)
    assert sum(isinstance(e, Submit) for e in fx) <= 1


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize(
    "event",
    [TextReceived("hello"), ButtonPressed("c:go:tok12345"), CommandReceived("drop"), CommandReceived("help")],
)
def test_user_input_in_every_phase_never_crashes_or_double_submits(phase, event):
    state = at(phase, file_id="file_x", row_count=1, intent_id="i")
    new, fx = core.step(state, event, ctx())
    assert sum(isinstance(e, Submit) for e in fx) <= 1
    if phase in ("submitting", "reconciling"):
        assert new.phase == phase  # an in-flight submit is never abandoned
    assert all(isinstance(e, Reply | Submit | Cleanup | SendTemplates | Precheck) for e in fx)


def parse_choice(text):
    return _parse(text, ("fast", "standard", "batch"))


def test_parse_choice():
    assert parse_choice("google/gemini-2.5-flash-image fast") == (
        "google/gemini-2.5-flash-image",
        "fast",
        False,
        False,
    )
    assert parse_choice("FAST, vendor/m") == ("vendor/m", "fast", False, False)
    assert parse_choice("仅预估") == (None, None, False, True)
    assert parse_choice("hello there") == (None, None, False, False)


def test_an_unexpected_effect_failure_never_leaves_the_chat_stuck():
    from conversation.events import EffectFailed

    s, fx = core.step(at("inspecting", path="/m/x"), EffectFailed("Inspect"), ctx())
    assert s.phase == "idle" and s.pending is None and keys(fx) == ["error.internal"]
    s, fx = core.step(
        at("submitting", file_id="f", row_count=1, intent_id="i"), EffectFailed("Submit"), ctx()
    )
    assert s.phase == "reconciling" and fx[-1] == Reconcile("i", "f")


def test_a_reading_cut_short_is_tried_once_more_then_dropped():
    s, out = core.step(at("resolving"), FileReady("/m/p.csv", "p.csv"), ctx())
    assert s.pending.inspections == 1 and kinds(out) == ["Inspect"]
    s, out = core.step(s, InspectResumed(), ctx())  # restarted while reading: once more
    assert s.phase == "inspecting" and s.pending.inspections == 2 and kinds(out) == ["Inspect"]
    s, out = core.step(s, InspectResumed(), ctx())  # cut short again: dropped, with a message
    assert s.phase == "idle" and s.pending is None
    assert keys(out) == ["flow.inspect_abandoned"] and Cleanup(("/m/p.csv",)) in out
    for phase in ("idle", "uploading", "awaiting_confirm"):
        state = at(phase, path="/m/p.csv")
        assert core.step(state, InspectResumed(), ctx()) == (state, [])


# --- shared-nothing media: the file is not on this host ------------------------------------


def test_an_upload_without_the_file_gets_it_again_from_its_source():
    s = at(
        "uploading", path="/gone/a.csv", converted="/gone/a.jsonl", source_kind="channel", source_ref="TG1"
    )
    s.pending.filename = "a.csv"
    new, effects = core.step(s, FileMissing("upload"), ctx())
    assert new.phase == "resolving" and new.pending.refetched and new.pending.converted is None
    assert effects == [Download("TG1", "a.csv")]


def test_a_file_read_again_to_continue_goes_straight_to_the_upload():
    s = at("inspecting", path="/here/a.csv", refetched=True)
    report = {"rows": {"total": 3, "valid": 2, "invalid": 1}, "errors": [{"message": "row 3"}]}
    new, effects = core.step(s, Inspected(report, "/here/a.jsonl"), ctx())
    assert new.phase == "uploading" and kinds(effects) == ["Upload"]  # no second report, no question


def test_a_file_without_a_source_is_dropped_with_a_message():
    new, effects = core.step(at("uploading", path="/gone/a.csv"), FileMissing("upload"), ctx())
    assert new.phase == "idle" and keys(effects)[0] == "flow.file_lost"


def test_the_source_is_recorded_for_each_kind_of_input():
    s, _ = core.step(ChatState(), FileReceived("TG9", "p.csv"), ctx())
    assert (s.pending.source_kind, s.pending.source_ref) == ("channel", "TG9")
    s, _ = core.step(ChatState(), TextReceived("https://example.com/p.csv"), ctx())
    assert (s.pending.source_kind, s.pending.source_ref) == ("url", "https://example.com/p.csv")
    s, _ = core.step(ChatState(), TextReceived("/data/p.csv"), ctx(paths=True))
    assert (s.pending.source_kind, s.pending.source_ref) == ("path", "/data/p.csv")


def test_a_failure_after_the_upload_says_the_file_is_at_the_service():
    s = at("prechecking", path="/m/a.csv", converted="/m/a.jsonl", file_id="file_abc1", row_count=2)
    new, effects = core.step(s, ServiceFailed("precheck", "unavailable", "503"), ctx())
    assert new.phase == "idle" and keys(effects) == ["error.unavailable", "flow.so_far_uploaded"]
    new, effects = core.step(
        at("prechecking", converted="/m/a.jsonl", file_id="file_abc1"), EffectFailed("X"), ctx()
    )
    assert keys(effects) == ["error.internal", "flow.so_far_uploaded"]
    # A file_id the user gave was never uploaded by this flow: nothing to add.
    _, effects = core.step(
        at("prechecking", file_id="file_abc1"), ServiceFailed("precheck", "unavailable", "x"), ctx()
    )
    assert keys(effects) == ["error.unavailable"]


def test_a_balance_failure_shows_where_to_top_up():
    failure = ServiceFailed(
        "submit",
        "balance",
        "x",
        {"current": "1", "required": "2", "shortfall": "1", "recharge_url": "https://t.test"},
    )
    _, effects = core.step(at("submitting", file_id="file_abc1", intent_id="i"), failure, ctx())
    assert "error.balance_topup" in keys(effects)
    assert "https://t.test" in [
        b.data for e in effects if isinstance(e, Reply) for row in e.buttons for b in row
    ]


def test_details_without_an_id_means_the_chats_latest_job():
    s = ChatState(recent=["job_9", "job_1"])
    _, effects = core.step(s, CommandReceived("details", (), 5), ctx())
    assert effects == [Details("job_9")]
    _, effects = core.step(ChatState(), CommandReceived("details", (), 5), ctx())
    assert keys(effects) == ["cmd.details_usage"]  # no job yet: how to use it


def test_the_submitter_may_cancel_their_own_job_and_nobody_elses():
    s = at("awaiting_confirm", file_id="file_abc1", row_count=2)
    s, _ = core.step(s, TextReceived("ok", 42), ctx())  # user 42 confirms
    s, _ = core.step(s, Submitted("job_42"), ctx())
    assert s.owners == {"job_42": "tg:42"}  # a bare number is a Telegram user
    _, effects = core.step(s, ButtonPressed("j:x:job_42", 42), ctx())
    assert keys(effects) == ["cmd.cancel_confirm"]  # asked to confirm, as admins are
    _, effects = core.step(s, ButtonPressed("k:y:job_42", 42), ctx())
    assert effects == [CancelJob("job_42", "")]
    _, effects = core.step(s, CommandReceived("cancel", ("job_42",), 42), ctx())
    assert keys(effects) == ["cmd.cancel_confirm"]
    for other in (43, 0):  # another member of the group; an unknown sender
        _, effects = core.step(s, ButtonPressed("j:x:job_42", other), ctx())
        assert keys(effects) == ["cmd.cancel_refused"]
        _, effects = core.step(s, ButtonPressed("k:y:job_42", other), ctx())
        assert keys(effects) == ["cmd.cancel_refused"]
    _, effects = core.step(s, ButtonPressed("j:x:job_1", 42), ctx())  # not theirs
    assert keys(effects) == ["cmd.cancel_refused"]


def test_a_caption_that_confirms_makes_its_sender_the_submitter():
    s, _ = core.step(ChatState(), FileReceived("TG1", "p.csv", caption="fast", user_id=7001), ctx())
    assert s.pending.owner == "tg:7001"
