"""``python -m sqair_pyro`` (and ``torchrun -m sqair_pyro``) is the ``sqair-pyro`` command."""

import sys

from sqair_pyro.cli import main

sys.exit(main())
