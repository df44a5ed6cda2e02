import sys

from rushgate.cli import main

sys.exit(main())
