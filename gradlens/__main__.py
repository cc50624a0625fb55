"""``python -m gradlens``: the same CLI as the ``gradlens`` command."""

import sys

from .cli import main

sys.exit(main())
