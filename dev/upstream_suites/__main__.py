from __future__ import annotations

import sys

from upstream_suites.runner import main

sys.exit(main())
