import sys

from xpcnn.bench import main

sys.exit(main())
