# -*- coding: utf-8 -*-
# Copyright: oneclickvirt.virt contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The errors of the provider layer.

TransportError means "the road failed": the request may be tried again over another transport.
VirtError and its subclasses mean "the backend answered": retrying elsewhere would give the same answer.
"""

from __future__ import annotations


class VirtError(Exception):
    """A failure the user can act on; the message says what and how to fix it."""


class InvalidSpec(VirtError):
    """Bad input, found before anything on the node changed."""


class NotFound(VirtError):
    pass


class Conflict(VirtError):
    pass


class Unsupported(VirtError):
    """The backend or node cannot do what was asked (a disk quota on overlay2, a VM on Docker)."""


class BackendError(VirtError):
    """The backend refused; carries the backend's own message and status."""

    def __init__(self, message, status=None, backend_message=None):
        super().__init__(message)
        self.status = status
        self.backend_message = backend_message


class OperationTimeout(VirtError):
    """A long operation did not finish within `timeout`; the message names it and what was last seen."""


class TransportError(Exception):
    """The transport failed (connect refused, TLS failure, timeout, dropped connection).

    `sent` is False when the request certainly never reached the server, so even a write may be tried
    again elsewhere. When `sent` is True a write may have been applied: never replay it blindly.
    """

    def __init__(self, message, sent=False):
        super().__init__(message)
        self.sent = sent


class UncertainWrite(Exception):
    """A write may or may not have been applied (its answer was lost). The caller re-reads and converges."""

    def __init__(self, cause):
        super().__init__(str(cause))
        self.cause = cause
