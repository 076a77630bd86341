import sys

from trtd.daemon.commands.cli import main

sys.exit(main())
