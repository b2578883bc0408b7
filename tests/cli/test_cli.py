"""The klaviyo-signal command line: demo, verify and send, their output and exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from klaviyo_signal._cli import main
from klaviyo_signal._cli.lines import parse_line
from klaviyo_signal.testing import FakeKlaviyo

EMAIL = "ann@example.com"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKlaviyo]:
    """A FakeKlaviyo that the environment's keys and base URL point at."""
    with FakeKlaviyo() as server:
        monkeypatch.setenv("KLAVIYO_PUBLIC_API_KEY", "AbC123")
        monkeypatch.setenv("KLAVIYO_PRIVATE_API_KEY", "pk_test_0123456789abcdef")
        monkeypatch.setenv("KLAVIYO_BASE_URL", server.url)
        yield server


def write_lines(tmp_path: Path, *lines: object) -> str:
    path = tmp_path / "messages.jsonl"
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )
    return str(path)


# -- the parser ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["demo", "--help"],
        ["verify", "--help"],
        ["send", "--help"],
        ["explain", "--help"],
        ["blueprint", "--help"],
        ["blueprint", "show", "--help"],
        ["blueprint", "validate", "--help"],
    ],
)
def test_help_everywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Every command answers --help with its usage and exit code 0."""
    assert main(argv) == 0
    assert "usage: klaviyo-signal" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the installed version."""
    from klaviyo_signal import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"klaviyo-signal {__version__}"


@pytest.mark.parametrize(
    "argv", [[], ["nope"], ["verify"], ["send"], ["send", "--event", "A", "--file", "x"]]
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A missing or unknown command or a missing required option exits 2 with the usage."""
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


# -- demo ---------------------------------------------------------------------------------


def test_demo_shows_every_outcome() -> None:
    """`python -m klaviyo_signal demo` shows each outcome, the merged profile and its feed."""
    result = subprocess.run(
        [sys.executable, "-m", "klaviyo_signal", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert out.count("delivered") == 5
    assert 'track "Order Completed"   purchase         delivered  202' in out
    assert "retried after 429" in out
    assert "HTTP 429 -> 202" in out
    assert "event 'Wishlist Shared' has no rule in the blueprint" in out
    assert "consent: marketing denied" in out
    assert "the anonymous visit merged into it" in out
    assert "email          jane@example.com" in out
    assert "phone_number   +447911123456" in out
    assert "Activity feed (4 events, oldest first)" in out
    assert "84.00 GBP" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "\x1b[" not in out


def test_demo_without_testing_extra_says_how_to_install() -> None:
    """Without openapi-schema-validator, demo names the extra to install and exits 2."""
    code = (
        "import sys; sys.modules['openapi_schema_validator'] = None\n"
        "from klaviyo_signal._cli import main; sys.exit(main(['demo']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "pip install 'klaviyo-signal[testing]'" in result.stderr


# -- verify -------------------------------------------------------------------------------


def test_verify_sends_a_profile_and_a_test_event(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify imports the profile (201), sends the test event (202) and says where to look."""
    assert main(["verify", "--email", EMAIL]) == 0
    out = capsys.readouterr().out
    assert "profile import: HTTP 201" in out
    assert "event 'klaviyo_signal_test': HTTP 202" in out
    assert "Audience > Profiles" in out
    assert EMAIL in out
    [event] = fake.events_for(email=EMAIL)
    assert event.metric == "klaviyo_signal_test"


@pytest.mark.parametrize("status", [401, 403])
def test_verify_rejected_key_prints_the_fix(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    """A 401 or 403 exits 1 and says where to check the key and which scopes it needs."""
    fake.fail_next(status)
    assert main(["verify", "--email", EMAIL]) == 1
    err = capsys.readouterr().err
    assert f"HTTP {status}" in err
    assert "Account > Settings > API Keys" in err
    assert "events:write and profiles:write" in err


def test_verify_without_keys_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify with no keys in the environment names the missing variables and exits 2."""
    monkeypatch.delenv("KLAVIYO_PUBLIC_API_KEY", raising=False)
    monkeypatch.delenv("KLAVIYO_PRIVATE_API_KEY", raising=False)
    assert main(["verify", "--email", EMAIL]) == 2
    err = capsys.readouterr().err
    assert "KLAVIYO_PUBLIC_API_KEY, KLAVIYO_PRIVATE_API_KEY" in err


def test_verify_bad_email_exits_2(fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str]) -> None:
    """An address that is not one is refused before anything is sent."""
    assert main(["verify", "--email", "not-an-address"]) == 2
    assert "not a valid email address" in capsys.readouterr().err
    assert fake.requests == []


# -- send: one event from flags -----------------------------------------------------------


def test_send_one_event_from_flags(fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str]) -> None:
    """--event with an identifier and --properties sends one mapped event and exits 0."""
    argv = ["send", "--event", "Order Completed", "--email", EMAIL, "--user-id", "u-1"]
    argv += ["--properties", '{"order_id": "o-1", "revenue": 42.50, "currency": "GBP"}']
    assert main(argv) == 0
    assert "1 delivered, 0 dropped, 0 failed, 0 invalid" in capsys.readouterr().out
    [event] = fake.events_for(email=EMAIL, external_id="u-1")
    assert (event.metric, event.value, event.value_currency) == ("purchase", 42.5, "GBP")


def test_send_custom_event_is_dropped_unless_enabled(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str]
) -> None:
    """A custom event is dropped (exit 0, reason shown) until --enable forwards it."""
    assert main(["send", "--event", "Signed Up", "--email", EMAIL]) == 0
    out = capsys.readouterr().out
    assert "0 delivered, 1 dropped" in out
    assert "no rule in the blueprint" in out
    assert fake.requests == []

    assert main(["send", "--event", "Signed Up", "--email", EMAIL, "--enable"]) == 0
    assert [e.metric for e in fake.events] == ["signed_up"]


def test_send_failure_exits_1(fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str]) -> None:
    """An event Klaviyo rejects is counted as failed with Klaviyo's reason, and exits 1."""
    fake.fail_next(400)
    assert main(["send", "--event", "Order Completed", "--email", EMAIL]) == 1
    out = capsys.readouterr().out
    assert "0 delivered, 0 dropped, 1 failed" in out
    assert "failed   1 x Klaviyo answered HTTP 400" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--event", "A", "--properties", "{"], "--properties: not JSON"),
        (["--event", "A", "--properties", "[1]"], "--properties: must be a JSON object"),
        (["--file", "x.jsonl", "--email", EMAIL], "go with --event only"),
    ],
)
def test_send_bad_flags_exit_2(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Bad flag values are usage errors of `send`: exit 2 with the reason."""
    assert main(["send", *argv]) == 2
    err = capsys.readouterr().err
    assert "usage: klaviyo-signal send" in err
    assert message in err


def test_send_without_keys_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """send with no keys in the environment says which are missing and exits 2."""
    monkeypatch.delenv("KLAVIYO_PRIVATE_API_KEY", raising=False)
    assert main(["send", "--event", "Order Completed", "--email", EMAIL]) == 2
    assert "KLAVIYO_PRIVATE_API_KEY" in capsys.readouterr().err


def test_send_missing_file_exits_2(fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that cannot be read exits 2 and names it."""
    assert main(["send", "--file", "/no/such/file.jsonl"]) == 2
    assert "cannot read /no/such/file.jsonl" in capsys.readouterr().err


# -- send: JSON Lines ---------------------------------------------------------------------

VISIT = [
    {"type": "page", "name": "Home", "anonymousId": "a-1", "properties": {"url": "https://x.io/"}},
    {"type": "identify", "user_id": "u-1", "anonymous_id": "a-1", "traits": {"email": EMAIL}},
    {
        "type": "track",
        "event": "Order Completed",
        "userId": "u-1",
        "messageId": "m-1",
        "timestamp": "2024-10-15T09:30:00Z",
        "properties": {"order_id": "o-1", "revenue": 42.5, "currency": "GBP"},
        "sentAt": "2024-10-15T09:30:01Z",
    },
]


@pytest.mark.parametrize("mode", [[], ["--sync"]])
def test_send_file_delivers_every_line(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: list[str]
) -> None:
    """Each line, camelCase or snake_case, becomes its call; all land on one profile."""
    assert main(["send", "--file", write_lines(tmp_path, *VISIT), *mode]) == 0
    assert "3 call(s): 3 delivered, 0 dropped, 0 failed, 0 invalid" in capsys.readouterr().out
    events = fake.events_for(email=EMAIL, anonymous_id="a-1", external_id="u-1")
    assert [e.metric for e in events] == ["page_view", "purchase"]
    assert events[1].unique_id == "m-1"
    assert events[1].time is not None
    assert events[1].time.startswith("2024-10-15T09:30:00")


def test_send_counts_bad_lines_and_goes_on(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Bad lines are reported by number and counted; the good ones are sent; exit 1."""
    path = write_lines(
        tmp_path,
        VISIT[0],
        "not json",
        {"type": "track", "event": "Order Completed", "properties": {}},
        "",
        {"type": "alias", "userId": "u-1"},
        {"type": "page", "event": "Home", "userId": "u-1"},
        {"type": "track", "event": "Signed Up", "userId": "u-1"},
        VISIT[2],
    )
    assert main(["send", "--file", path]) == 1
    captured = capsys.readouterr()
    assert "7 call(s): 2 delivered, 1 dropped, 0 failed, 4 invalid" in captured.out
    assert "line 2: invalid: not JSON" in captured.err
    assert "line 3: invalid: no profile identifier" in captured.err
    assert "line 5: invalid: 'type' must be 'track', 'identify', 'page'" in captured.err
    assert "line 6: invalid: page messages take no 'event'" in captured.err
    assert "dropped  1 x event 'Signed Up' has no rule" in captured.out
    assert "(line 7)" in captured.out
    assert "invalid  1 x " in captured.out
    assert "not JSON: Expecting value: line 1 column 1 (char 0) (line 2)" in captured.out
    assert len(fake.events) == 2


def test_send_reads_stdin(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--file - reads the messages from stdin; --enable alone forwards every custom event."""
    lines = [
        {"type": "track", "event": "Signed Up", "userId": "u-1"},
        {"type": "track", "event": "Plan Changed", "userId": "u-1", "properties": {"plan": "pro"}},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["send", "--file", "-", "--enable"]) == 0
    assert "2 delivered" in capsys.readouterr().out
    assert [e.metric for e in fake.events] == ["signed_up", "plan_changed"]
    assert fake.events[1].properties["plan"] == "pro"


def test_send_progress_bar_on_request(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--progress draws the bar on stderr (never stdout), ending at 100%."""
    assert main(["send", "--file", write_lines(tmp_path, *VISIT), "--progress"]) == 0
    captured = capsys.readouterr()
    assert "[####################] 100% 3/3" in captured.err
    assert "%" not in captured.out


def test_send_no_progress_bar_when_not_a_terminal(
    fake: FakeKlaviyo, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without --progress and without a terminal, stderr stays clean."""
    assert main(["send", "--file", write_lines(tmp_path, *VISIT)]) == 0
    assert capsys.readouterr().err == ""


def test_quickstart_example_runs() -> None:
    """examples/quickstart.py (the README's first command) runs and shows what was recorded."""
    example = Path(__file__).parents[2] / "examples" / "quickstart.py"
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "track Order Completed  delivered (HTTP 202)" in result.stdout
    assert "event purchase   value=42.5 GBP" in result.stdout


def test_explain_prints_the_exact_request(capsys: pytest.CaptureFixture[str]) -> None:
    """explain prints the decision and the request body, Decimal revenue exact, key masked."""
    message = json.dumps(
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "u-1",
            "properties": {"order_id": "o-1", "revenue": 42.5, "currency": "GBP"},
        }
    ).replace("42.5", "42.50")
    assert main(["explain", message]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert shown["status"] == "send"
    assert shown["rule"] == "Order Completed"
    (request,) = shown["requests"]
    assert request["path"] == "/api/events"
    assert request["headers"]["Authorization"] == "Klaviyo-API-Key pk_***"
    assert '"value": 42.50' in out
    assert main(["explain", "--variant", "klaviyo_ecommerce", message]) == 0
    assert '"name": "Placed Order"' in capsys.readouterr().out


def test_explain_bad_message_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """explain names the field when the message breaks a rule."""
    assert main(["explain", '{"type": "track", "event": "X"}']) == 2
    assert "no profile identifier" in capsys.readouterr().err


def test_blueprint_show_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """blueprint show prints a loadable file; validate lists every problem with its path."""
    assert main(["blueprint", "show", "--variant", "klaviyo_ecommerce"]) == 0
    shown = capsys.readouterr().out
    good = tmp_path / "good.json"
    good.write_text(shown)
    assert main(["blueprint", "validate", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": {"X": {"metric": 12}}, "colour": 1}')
    assert main(["blueprint", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "2 problems" in err
    assert "colour: unknown key" in err
    assert 'rules["X"].metric' in err


@pytest.mark.parametrize("kind", ["track", "page", "identify"])
def test_a_line_may_carry_the_calls_own_consent(kind: str) -> None:
    """A line takes the arguments its call takes, explicit consent included; its backfill is
    ignored (the run's --backfill decides)."""
    line = {"type": kind, "userId": "u-1", "consent": {"marketing": True}}
    assert parse_line(json.dumps({**line, "backfill": False})) == parse_line(json.dumps(line))
    if kind == "track":
        line["event"] = "Order Completed"
    assert parse_line(json.dumps(line)) == (
        kind,
        {k: v for k, v in {**line, "user_id": "u-1"}.items() if k not in {"type", "userId"}},
    )


def test_explain_follows_the_revision(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """explain checks under --revision (else KLAVIYO_REVISION), as send does: 350
    properties pass under the default revision and not under one that allows 300."""
    properties = {"order_id": "o-1", **{f"p{i}": i for i in range(349)}}
    message = json.dumps(
        {"type": "track", "event": "Order Completed", "userId": "u-1", "properties": properties}
    )
    monkeypatch.delenv("KLAVIYO_REVISION", raising=False)
    assert main(["explain", message]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "send"
    assert main(["explain", "--revision", "2025-01-15", message]) == 2
    assert "over 300 event properties" in capsys.readouterr().err
    monkeypatch.setenv("KLAVIYO_REVISION", "2025-01-15")
    assert main(["explain", message]) == 2
    assert "over 300 event properties" in capsys.readouterr().err
