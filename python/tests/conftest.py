# SPDX-License-Identifier: MIT
import os
import sys

# The worker processes import the tests' functions (funcs.py) by name through the caller's sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
