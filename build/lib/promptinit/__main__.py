import sys

from promptinit.cli import main

sys.exit(main())
