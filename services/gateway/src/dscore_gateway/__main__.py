import sys

from dscore_gateway.main import main

sys.exit(main())
