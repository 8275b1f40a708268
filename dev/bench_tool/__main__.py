import sys

from bench_tool.cli import main

sys.exit(main())
