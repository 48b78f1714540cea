"""``python -m fastlift ...`` (what ``torchrun -m fastlift train ...`` runs in every worker)."""
import sys

from fastlift.cli import main

if __name__ == "__main__":
    sys.exit(main())
