"""`python -m promptloop.train CONFIG.yaml key=value ...`"""

import sys

from promptloop.train.cli import main

sys.exit(main())
