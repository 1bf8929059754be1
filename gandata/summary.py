"""What a stage returns: a typed summary, not a dict read by string keys.

Every stage's result is a dataclass deriving from :class:`Summary`. Its fields are the stage's JSON summary
(``to_json`` is what ``--json`` prints and what a pipeline records), ``lines`` is the one-screen text a terminal
gets, and ``brief`` the one line a pipeline prints for the stage.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar


@dataclasses.dataclass
class Summary:
    # fields left out of the JSON while they are None (the summary had no such key before it was typed)
    OMIT_NONE: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in self.OMIT_NONE:
                continue
            out[f.name] = _plain(value)
        return out

    def lines(self) -> list[str]:
        return [self.brief()]

    def brief(self) -> str:
        """The one line a pipeline prints: the first line of :meth:`lines` where a summary has its own."""
        return self.lines()[0] if type(self).lines is not Summary.lines else type(self).__name__

    def failure(self) -> tuple[int, str] | None:
        """(exit status, reason) when the stage ended without finishing its work (shown after the summary; 130:
        interrupted)."""
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, Summary):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    return value
