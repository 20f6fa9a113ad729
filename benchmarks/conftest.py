import os
import sys

# the benchmark modules import their size registry as a sibling module
sys.path.insert(0, os.path.dirname(__file__))
