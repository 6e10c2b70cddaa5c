"""Unit tests import the collection from this checkout through a collections path of its own."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / "tests" / "output" / "collections"
link = COLLECTIONS / "ansible_collections" / "oneclickvirt" / "virt"
link.parent.mkdir(parents=True, exist_ok=True)
if not link.is_symlink():
    link.symlink_to(ROOT)
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
