"""``python -m actprm.cli``: the ``actprm`` command, also for ``accelerate launch -m actprm.cli``."""

import sys

from . import main

sys.exit(main())
