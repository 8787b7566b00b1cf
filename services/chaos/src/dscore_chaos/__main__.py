import sys

from dscore_chaos.main import main

sys.exit(main())
