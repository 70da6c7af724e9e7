"""The one error the plug-in raises for input it cannot use."""

from __future__ import annotations


class DigitsInputError(ValueError):
    """Input the digits model cannot use; ``loc`` names the argument (and item) at fault.

    It is a ``ValueError`` so that the plug-in needs no platform import: deepfaas turns a
    ``ValueError`` from a plug-in into its ``ModelInputError`` and reads ``loc`` when present.
    """

    def __init__(self, message: str, loc: tuple[str | int, ...] = ("data",)) -> None:
        super().__init__(message)
        self.loc = loc
