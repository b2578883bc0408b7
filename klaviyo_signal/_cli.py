"""The ``klaviyo-signal`` command line: parse arguments, dispatch to one module per command.

Exit codes: 0 success; 1 something was not delivered (a failed or invalid call, a rejected
key); 2 bad usage or setup (argparse errors, missing environment, missing extra).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from ._version import VERSION

__all__ = ["main"]

_EPILOG = """\
environment (verify, send):
  KLAVIYO_PUBLIC_API_KEY   the 6-character public key (Site ID)
  KLAVIYO_PRIVATE_API_KEY  a private key (pk_...) with events:write and profiles:write
  KLAVIYO_BASE_URL         optional; e.g. a FakeKlaviyo's URL for tests

exit codes: 0 ok, 1 something was not delivered, 2 bad usage or setup.
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

    send = commands.add_parser(
        "send",
        help="send one event from flags, or many from a JSON Lines file",
        description=_fill(
            "Send one track call from flags, or Segment-style messages (one JSON object per "
            "line, type track, identify or page) from a file or stdin. Exits 1 if any call "
            "failed or any line was invalid."
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
    send.set_defaults(parser=send)  # usage errors found later name `send`
    send.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr even when it is not a terminal",
    )

    # Reserved: `explain` (client.explain) and `blueprint show|validate` (Blueprint.from_file)
    # are added here once the blueprints work provides them; each gets its own _cli_*.py.
    return parser


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
        from ._cli_demo import run_demo  # noqa: PLC0415

        return run_demo(sys.stdout, sys.stderr)
    if args.command == "verify":
        from ._cli_verify import run_verify  # noqa: PLC0415

        return run_verify(args.email, sys.stdout, sys.stderr)
    from ._cli_send import run_send  # noqa: PLC0415

    return run_send(args, args.parser, sys.stdout, sys.stderr)
