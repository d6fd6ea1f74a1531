"""Which lane an upload's renders take, from what this processor has seen of it.

An upload is *proven* once one of its renders is rendered within the render queue's budget,
and *heavy* once one ran over it before that. Until it is either, its renders on the render
queue run one at a time (`trial`): a set of slow SVGs then holds one render worker for one
budget, not all of them for one budget each, before the rest of it goes to the slow lane.
An ordinary set pays one render's time (tens of ms; not its PUTs) before the rest runs in
parallel; a set proven fast keeps the render queue even if a later SVG of it is slow (that one
alone moves).
Remembered per processor, most recent uploads only: another processor learns it anew.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

REMEMBERED = 1000  # uploads whose lane is remembered, most recent first

Verdict = Literal["proven", "heavy"]


class Uploads:
    def __init__(self, remembered: int = REMEMBERED) -> None:
        self.remembered = remembered
        self._verdicts: OrderedDict[uuid.UUID, Verdict] = OrderedDict()
        # The upload's render on trial: its event is set when it ends or the upload is judged.
        self._trials: dict[uuid.UUID, asyncio.Event] = {}

    def heavy(self, upload: uuid.UUID) -> bool:
        return self._verdicts.get(upload) == "heavy"

    def judge(self, upload: uuid.UUID, verdict: Verdict) -> None:
        """Remember the first verdict on an upload; a later one does not change it. Renders
        waiting for the upload's trial go on."""
        self._verdicts.setdefault(upload, verdict)
        if (turn := self._trials.get(upload)) is not None:
            turn.set()
        self._verdicts.move_to_end(upload)
        while len(self._verdicts) > self.remembered:
            self._verdicts.popitem(last=False)

    @asynccontextmanager
    async def trial(self, upload: uuid.UUID) -> AsyncIterator[None]:
        """One render at a time for an upload not judged yet; no wait for one that is.

        The others wait until the render on trial ends or its upload is judged, whichever
        comes first: a render is judged when it is rendered (`judge` from the pool's
        ``on_rendered``), not when its renditions are stored, so the upload's other renders
        do not wait for its PUTs.
        """
        while upload not in self._verdicts:
            turn = self._trials.get(upload)
            if turn is None:  # none on trial: this one is
                turn = self._trials[upload] = asyncio.Event()
                try:
                    yield
                finally:
                    turn.set()
                    if self._trials.get(upload) is turn:
                        del self._trials[upload]
                return
            await turn.wait()
        yield
