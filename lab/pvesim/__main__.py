"""`python3 -m pvesim --state-dir DIR`: run the simulator (see server.py)."""
import sys

from .server import main

sys.exit(main())
