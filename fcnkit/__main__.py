import sys

from fcnkit.cli.main import main

sys.exit(main())
