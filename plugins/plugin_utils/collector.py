# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Python's cycle collector paused for a burst of allocations on the controller.

Ansible's processes hold a large heap (the controller's objects, and in a worker everything it inherited), and
each full pass of the collector walks all of it. Packing a module's payload (syntax trees of every file) and
listing an inventory (the nodes' JSON, then hosts and variables) make enough short-lived objects to set off
several such passes, each one walking the whole heap, not only what the burst made. What they leave behind is
collected at the first pass after the burst.
"""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def collector_paused():
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
