"""The security tier (issue 15): each attack a tenant or a pod on the network can try, through the
real `kafka-expose serve` (this folder's server tests) or the real API server (the cluster tests)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
