"""``python -m allinone`` is the ``allinone`` command."""
import sys

from allinone.cli import main

sys.exit(main())
