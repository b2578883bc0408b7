"""The ``klaviyo-signal`` command line: parse arguments, dispatch to one module per command.

Exit codes: 0 success; 1 something was not delivered (a failed or invalid call, a rejected
key); 2 bad usage or setup (argparse errors, missing environment, missing extra); 130 and
143 ``send`` stopped by SIGINT (Ctrl-C) and SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence

from .._klaviyo.revisions import DEFAULT_REVISION, SUPPORTED_REVISIONS
from .._version import VERSION

__all__ = ["main"]

_EPILOG = """\
environment (verify, send):
  KLAVIYO_PUBLIC_API_KEY   the 6-character public key (Site ID)
  KLAVIYO_PRIVATE_API_KEY  a private key (pk_...) with events:write and profiles:write
  KLAVIYO_BASE_URL         optional; e.g. a FakeKlaviyo's URL for tests
  KLAVIYO_REVISION         optional; the API revision (default: the newest supported)

exit codes: 0 ok, 1 something was not delivered, 2 bad usage or setup,
130 (143) send stopped by Ctrl-C (SIGTERM).
Start with: klaviyo-signal demo
"""


def _fill(text: str) -> str:
    # The epilogs need RawDescriptionHelpFormatter, which leaves descriptions unwrapped.
    return textwrap.fill(text, 78, break_on_hyphens=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="klaviyo-signal",
        description="Send identify, track and page calls to Klaviyo, and try it locally.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    commands.add_parser(
        "demo",
        help="run a visit through the SDK against a local Klaviyo (no account needed)",
        description=_fill(
            "Start a local fake Klaviyo, send a realistic visit through the SDK and show "
            "every outcome, then the resulting Klaviyo profile and its activity feed. "
            "Needs no keys and no network; needs the testing extra: "
            "pip install 'klaviyo-signal[testing]'."
        ),
    )

    verify = commands.add_parser(
        "verify",
        help="send a test profile and event to your Klaviyo account",
        description=_fill(
            "Send a test identify and a 'Klaviyo Signal Test' event with the keys in "
            "KLAVIYO_PUBLIC_API_KEY and KLAVIYO_PRIVATE_API_KEY, and say where to see them."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "--email", required=True, metavar="ADDRESS", help="the test profile's email address"
    )
    _revision_option(verify)

    send = commands.add_parser(
        "send",
        help="send one event from flags, or many from a JSON Lines file",
        description=_fill(
            "Send one track call from flags, or Segment-style messages (one JSON object per "
            "line, type track, identify, page, subscribe or unsubscribe) from a file or "
            "stdin, streamed. Reruns over the same file are duplicate-free; --resume skips "
            "what a run that was stopped already finished. Exits 1 if any call failed or any "
            "line was invalid, 130 on Ctrl-C."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = send.add_mutually_exclusive_group(required=True)
    source.add_argument("--event", metavar="NAME", help="send one track call with this event")
    source.add_argument(
        "--file", metavar="PATH", help="send each line of a JSON Lines file ('-' for stdin)"
    )
    send.add_argument("--user-id", metavar="ID", help="--event: your id for the person")
    send.add_argument("--anonymous-id", metavar="ID", help="--event: a device or cookie id")
    send.add_argument("--email", metavar="ADDRESS", help="--event: the person's email address")
    send.add_argument(
        "--properties", metavar="JSON", help="--event: a JSON object, e.g. '{\"revenue\": 9.5}'"
    )
    send.add_argument(
        "--enable",
        action="append",
        nargs="?",
        const="*",
        metavar="NAME",
        help=(
            "forward a custom event the default blueprint drops; without NAME, forward "
            "every custom event (repeatable)"
        ),
    )
    send.add_argument(
        "--sync", action="store_true", help="send each call before reading the next (slower)"
    )
    send.add_argument(
        "--backfill",
        action="store_true",
        help="record the events without triggering flows (historical data)",
    )
    send.add_argument(
        "--blueprint",
        metavar="PATH",
        help="your blueprint, a .json or .toml file (as 'blueprint validate' reads it)",
    )
    send.add_argument(
        "--resume",
        metavar="STATE",
        help=(
            "--file: keep a checkpoint in STATE; a rerun with the same STATE after a crash, "
            "kill or Ctrl-C sends only the lines not yet final"
        ),
    )
    send.add_argument(
        "--failed",
        metavar="PATH",
        help=(
            "--file: write each failed or invalid line to PATH (JSON Lines, the message "
            "plus a _failed reason), to fix and send again with --file"
        ),
    )
    _revision_option(send)
    send.set_defaults(parser=send)  # usage errors found later name `send`
    send.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr even when it is not a terminal",
    )

    explain = commands.add_parser(
        "explain",
        help="show what one message would send to Klaviyo, without sending",
        description=_fill(
            "Map one Segment-style message (a JSON object with type track, identify or "
            "page) through a blueprint and print the decision and the exact requests "
            "(key masked). Sends nothing and needs no keys."
        ),
    )
    explain.add_argument("message", metavar="JSON", help="the message, e.g. '{\"type\": ...}'")
    _blueprint_options(explain)
    _revision_option(explain)
    explain.add_argument(
        "--require-consent", action="store_true", help="drop calls without a marketing grant"
    )

    blueprint = commands.add_parser(
        "blueprint",
        help="show a blueprint, or validate a blueprint file",
        description=_fill(
            "show: print a built-in variant or a file as the JSON a file would hold. "
            "validate: load a JSON or TOML file and list every problem with its path "
            "(exit 1 when there is one)."
        ),
    )
    actions = blueprint.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    show = actions.add_parser("show", help="print a blueprint as JSON")
    _blueprint_options(show)
    validate = actions.add_parser("validate", help="check a blueprint file")
    validate.add_argument("file", metavar="PATH", help="a .json or .toml blueprint file")
    return parser


def _revision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--revision",
        metavar="YYYY-MM-DD",
        help=(
            f"the Klaviyo API revision (default: KLAVIYO_REVISION, else {DEFAULT_REVISION}; "
            f"supported: {', '.join(SUPPORTED_REVISIONS)})"
        ),
    )


def _blueprint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blueprint", metavar="PATH", help="a .json or .toml blueprint file")
    parser.add_argument(
        "--variant",
        default="default",
        choices=("default", "klaviyo_ecommerce"),
        help="a built-in blueprint (default: default)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code.

    Args:
        argv: The arguments after the program name; default ``sys.argv[1:]``.
    """
    parser = _parser()
    try:
        return _run(parser.parse_args(argv))
    except SystemExit as exc:  # --help, --version and usage errors, as argparse reports them
        return exc.code if isinstance(exc.code, int) else 2


def _run(args: argparse.Namespace) -> int:
    # Each command's module is imported on use, so `--help` stays fast and only `demo`
    # loads the fake.
    if args.command == "demo":
        from .demo import run_demo  # noqa: PLC0415

        return run_demo(sys.stdout, sys.stderr)
    if args.command == "verify":
        from .verify import run_verify  # noqa: PLC0415

        return run_verify(args.email, sys.stdout, sys.stderr, args.revision)
    if args.command == "explain":
        from .blueprint import run_explain  # noqa: PLC0415

        return run_explain(
            args.message,
            path=args.blueprint,
            variant=args.variant,
            require_consent=args.require_consent,
            revision=args.revision or os.environ.get("KLAVIYO_REVISION") or DEFAULT_REVISION,
            out=sys.stdout,
            err=sys.stderr,
        )
    if args.command == "blueprint":
        from .blueprint import run_blueprint  # noqa: PLC0415

        if args.action == "validate":
            return run_blueprint("validate", args.file, "default", sys.stdout, sys.stderr)
        return run_blueprint("show", args.blueprint, args.variant, sys.stdout, sys.stderr)
    from .send import run_send  # noqa: PLC0415

    return run_send(args, args.parser, sys.stdout, sys.stderr)
