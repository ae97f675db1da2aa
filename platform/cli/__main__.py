"""``python -m segarena.platform.cli``: the segarena command."""

import sys

from segarena.platform.cli.main import main

sys.exit(main())
