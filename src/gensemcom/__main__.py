import sys

from gensemcom.cli.main import main

sys.exit(main())
