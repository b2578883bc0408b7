"""``python -m klaviyo_signal``: the same command line as ``klaviyo-signal``."""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
