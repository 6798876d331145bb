"""``python -m ctrlsparse.cli ...``, the same as the ``ctrlsparse`` command."""

import sys

from ctrlsparse.cli import main

sys.exit(main())
