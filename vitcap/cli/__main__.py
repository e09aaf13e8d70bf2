import sys

from vitcap.cli.main import main

sys.exit(main())
