"""``python -m ctrlsparse ...`` (and ``torchrun -m ctrlsparse ...``): the ``ctrlsparse`` command."""

import sys

from ctrlsparse.cli import main

sys.exit(main())
