"""python -m trtd.bench == trtd bench."""

import sys

from .harness import main

sys.exit(main())
