"""A chat completion delivered in pieces: what :meth:`Gateway.stream` hands the HTTP server.

:class:`GatewayStream` is the gateway's side of ``stream: true``. Everything that can refuse the call (the
request, the endpoint policy, the budgets, every candidate failing before its first piece) happened before
it exists, so the server answers those with an error status; from then on the call is paid for, and the
stream settles it exactly once, however it ends::

    pieces() runs to the end     the provider's whole answer (its usage and cost) is settled on the Budgets,
                                 recorded, cached and audited before pieces() returns: ``result`` is set
    the provider fails mid-way   what was streamed is settled (estimated: the prompt's tokens and about four
                                 characters a token of what arrived), recorded with the error's type, and
                                 pieces() raises the GatewayError
    the client goes away         the caller calls aclose() (shielded, in a finally): the provider's stream is
    (or the caller stops)        closed and what was streamed is settled like a failure, status
                                 ``ClientDisconnected``; nothing stays reserved

A stream of an answer the gateway already has (a cache hit, or an upstream that cannot stream:
:meth:`GatewayStream.whole`) was settled like a plain call before it was sent; it is cut into pieces.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Literal

from ..llm.chat import ModelError, ModelResponse, StreamDelta

if TYPE_CHECKING:
    from .service import GatewayResult

__all__ = ["CLIENT_DISCONNECTED", "GatewayStream", "pieces_of"]

CLIENT_DISCONNECTED = "ClientDisconnected"
CacheUse = Literal["hit", "miss", "bypass"]
End = Callable[[ModelResponse], Awaitable["GatewayResult"]]
Abandon = Callable[[str, ModelError | None], Awaitable[None]]


def pieces_of(answer: ModelResponse, piece: int = 64) -> list[StreamDelta]:
    """A whole answer as stream pieces: its text ``piece`` characters at a time, then its tool calls."""
    out = [StreamDelta(answer.text[i:i + piece]) for i in range(0, len(answer.text), piece)]
    if answer.tool_calls:
        out.append(StreamDelta(tool_calls=tuple({"index": i, **dict(c)} for i, c in enumerate(answer.tool_calls))))
    return out


class GatewayStream:
    """The pieces of one answer and, once they have all been read, its :class:`GatewayResult`.

    ``cache``, ``model`` (the model answering) and ``warnings`` (soft budgets passed) are known before the
    first piece; ``result`` is set when :meth:`pieces` has run to its end (from the start for :meth:`whole`).
    Read :meth:`pieces` once, and call :meth:`aclose` when done, however it went (it is idempotent)."""

    def __init__(self, *, cache: CacheUse, model: str, warnings: tuple[str, ...],
                 source: AsyncIterator[StreamDelta | ModelResponse], first: StreamDelta | ModelResponse,
                 end: End, abandon: Abandon) -> None:
        self.cache = cache
        self.model = model
        self.warnings = warnings
        self.result: GatewayResult | None = None
        self._source = source
        self._first: StreamDelta | ModelResponse | None = first
        self._end = end
        self._abandon = abandon
        self._seen: list[str] = []
        self._settled = False

    @classmethod
    def whole(cls, result: GatewayResult, piece: int = 64) -> GatewayStream:
        """The stream of an answer already settled (a cache hit, an upstream that does not stream)."""
        answer = result.response

        async def source() -> AsyncIterator[StreamDelta | ModelResponse]:
            for delta in pieces_of(answer, piece)[1:]:
                yield delta
            yield answer

        async def end(response: ModelResponse) -> GatewayResult:
            return result

        async def abandon(seen: str, error: ModelError | None) -> None:
            return None

        first: StreamDelta | ModelResponse = next(iter(pieces_of(answer, piece)), answer)
        stream = cls(cache=result.cache, model=answer.model, warnings=result.warnings, source=source(), first=first,
                     end=end, abandon=abandon)
        stream.result = result
        return stream

    @property
    def settled(self) -> bool:
        return self._settled

    async def pieces(self) -> AsyncIterator[StreamDelta]:
        """The answer's pieces as they arrive; ModelError (the gateway's GatewayError when it refused the call
        itself) when the provider fails mid-way, after what was streamed is settled."""
        item, self._first = self._first, None
        if item is None:
            raise RuntimeError("GatewayStream.pieces() can be read only once")
        while not isinstance(item, ModelResponse):
            self._seen.append(item.content)
            self._seen.extend(str(c.get("function", {}).get("arguments", "")) for c in item.tool_calls)
            yield item
            try:
                item = await anext(self._source)
                continue
            except StopAsyncIteration:
                error = ModelError("BadModelResponse", f"model {self.model!r}: the stream ended without an answer",
                                   retryable=True, model=self.model)
            except ModelError as exc:
                error = exc
            self._settled = True
            await self._abandon("".join(self._seen), error)
            raise error
        self._settled = True
        self.result = await self._end(item)

    async def aclose(self) -> None:
        """End the provider's stream; settle what was streamed if the answer did not arrive whole."""
        if self._settled:
            return
        self._settled = True
        try:
            close = getattr(self._source, "aclose", None)
            if close is not None:
                await close()
        finally:
            await self._abandon("".join(self._seen), None)
