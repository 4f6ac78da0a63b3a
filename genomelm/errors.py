"""Typed errors. Library code raises these; only cli.py turns them into exit codes.

Exit codes (DESIGN.md house rule 7): 0 ok, 1 input/data error, 2 usage error, 130 interrupted.
"""

from __future__ import annotations


class GenomelmError(Exception):
    """Base class: a one-line message meant for the user, and the exit code it maps to."""

    exit_code = 1


class UsageError(GenomelmError):
    """The command line or the requested settings cannot work (exit 2)."""

    exit_code = 2


class InputError(GenomelmError):
    """An input file is missing, unreadable or inconsistent with another input (exit 1)."""


class FormatError(InputError):
    """An input file is not valid in its format (FASTA, VCF, BED, checkpoint) (exit 1)."""


class RefMismatchError(InputError):
    """A variant's REF allele does not match the reference FASTA (exit 1)."""


class Interrupted(GenomelmError):
    """A run stopped by a signal at a safe point, its work so far kept (exit 130 SIGINT, 143 SIGTERM)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
