import sys

from roitrack.cli import main

sys.exit(main())
