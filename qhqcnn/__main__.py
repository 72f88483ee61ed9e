"""``python -m qhqcnn`` (also the entry point under ``torchrun``)."""

import sys

from qhqcnn.cli.main import main

sys.exit(main())
