"""``python -m qhqcnn`` (also the entry point under ``torchrun``)."""

import sys

from qhqcnn.cli import main

sys.exit(main())
