"""OpenTelemetry spans of actors (``RIVET["TRACING"]``, off by default).

When on, action calls, scheduled runs, workflow steps and queue messages (sent, then
received and handled) are spans of the tracer ``rivet_django``, with the actor's name,
key, id and node as attributes. The W3C ``traceparent`` header carries the context in
and out: an HTTP action call or queue send, and the actions of a WebSocket connection
opened with one, continue their caller's trace, and the Python client (so
``self.client()`` calls, also those forwarded to another node) sends its current one. Export with the standard SDK setup
(an ``OTLPSpanExporter`` on your ``TracerProvider``); without one, rivet_django installs
an SDK provider so the inspector still sees spans. Each actor's recent finished spans
are kept in a bounded buffer that the inspector's ``traces`` route reads, as OTLP JSON.

Off, nothing here runs on the hot path: callers check :func:`enabled` first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .runtime.instance import ActorInstance

__all__ = [
    "actor_attributes",
    "actor_span",
    "client_span",
    "current_span_context",
    "enabled",
    "end_span",
    "extract",
    "inject",
    "make_current",
    "producer_span",
    "recent_spans",
    "restore",
    "setup",
    "span",
    "start_span",
    "within",
]

Kind = Literal["internal", "producer", "consumer", "client"]
"""The span kinds rivet_django makes: its own work, a message sent, a message handled."""

#: Finished spans kept per actor, and actors kept (the least recently traced go first).
SPANS_PER_ACTOR = 100
ACTORS_KEPT = 1_000

_enabled: bool | None = None


def enabled() -> bool:
    global _enabled
    if _enabled is None:
        from django.conf import settings

        if not settings.configured:
            return False  # the Python client outside a Django project: no settings, no spans
        from .conf import rivet_settings

        _enabled = bool(rivet_settings.TRACING)
        if _enabled:
            setup()
    return _enabled


def reset_enabled(**_: Any) -> None:
    global _enabled
    _enabled = None


class SpanBuffer:
    """Each actor's recent finished spans (``rivet.actor.id``); fed by a span processor that
    :func:`setup` adds to the SDK provider (the SDK is imported only when tracing is on)."""

    def __init__(self) -> None:
        self._spans: OrderedDict[str, deque[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, span: Any) -> None:
        actor_id = (span.attributes or {}).get("rivet.actor.id")
        if not actor_id:
            return
        with self._lock:
            spans = self._spans.get(actor_id)
            if spans is None:
                spans = self._spans[actor_id] = deque(maxlen=SPANS_PER_ACTOR)
                if len(self._spans) > ACTORS_KEPT:
                    self._spans.popitem(last=False)
            else:
                self._spans.move_to_end(actor_id)
            spans.append(span)

    def spans(self, actor_id: str, start_ms: int | None, end_ms: int | None, limit: int) -> tuple[list[Any], bool]:
        with self._lock:
            spans = list(self._spans.get(actor_id, ()))
        chosen = [
            s
            for s in spans
            if (start_ms is None or (s.end_time or 0) >= start_ms * 1_000_000)
            and (end_ms is None or (s.start_time or 0) <= end_ms * 1_000_000)
        ]
        clamped = len(chosen) > limit
        return chosen[-limit:] if limit else [], clamped


BUFFER = SpanBuffer()
logger = logging.getLogger("rivet_django.tracing")

_set_up = False
_setup_lock = threading.Lock()


def setup() -> None:
    """Add the span buffer to the global SDK tracer provider (installing one if none is set)."""
    global _set_up
    with _setup_lock:
        if _set_up:
            return
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        class _ToBuffer(SpanProcessor):
            def on_end(self, span: Any) -> None:
                BUFFER.record(span)

        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider(resource=Resource.create({"service.name": "rivet_django"}))
            _add_otlp_exporter(provider)
            trace.set_tracer_provider(provider)
            provider = trace.get_tracer_provider()  # the one that was set first wins
        if isinstance(provider, TracerProvider):
            provider.add_span_processor(_ToBuffer())
        _set_up = True


def _add_otlp_exporter(provider: Any) -> None:
    """Export to an OTLP/HTTP collector when the standard environment names one
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; the
    exporter reads its other ``OTEL_EXPORTER_OTLP_*`` variables itself), in batches."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    logger.info("Exporting spans over OTLP/HTTP to %s", getattr(exporter, "_endpoint", "?"))


_TRACER: Any = None


def _tracer() -> Any:
    """The ``rivet_django`` tracer, made once: the SDK builds a new one on every
    ``get_tracer`` (about 45 µs, most of a span's cost). Spans start after :func:`setup`,
    when the global provider is the one it will stay."""
    global _TRACER
    if _TRACER is None:
        from opentelemetry import trace

        from . import __version__

        _TRACER = trace.get_tracer("rivet_django", __version__)
    return _TRACER


_KINDS: dict[str, Any] = {}


def _kind(kind: Kind) -> Any:
    if not _KINDS:
        from opentelemetry.trace import SpanKind

        _KINDS.update(
            internal=SpanKind.INTERNAL, producer=SpanKind.PRODUCER, consumer=SpanKind.CONSUMER, client=SpanKind.CLIENT
        )
    return _KINDS[kind]


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A span (current while the block runs); exceptions are recorded on it. Attributes
    that are None are left out; one with ``rivet.actor.id`` lands in that actor's buffer."""
    return _current_span(name, "internal", attributes)


def _current_span(name: str, kind: Kind, attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
    # The SDK's own context manager, not one wrapped in ours: a generator-based wrapper
    # cost about 10 us a span (a third of one).
    attrs = {k: v for k, v in attributes.items() if v is not None}
    return _tracer().start_as_current_span(name, kind=_kind(kind), attributes=attrs)  # type: ignore[no-any-return]


def client_span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A :func:`span` of kind client: this node asks another (a forwarded request)."""
    return _current_span(name, "client", attributes)


def actor_attributes(inst: ActorInstance) -> dict[str, Any]:
    """The attributes that say which actor a span is about (and put it in its buffer)."""
    return {
        "rivet.actor.name": inst.definition.name,
        "rivet.actor.key": list(inst.key),
        "rivet.actor.id": inst.actor_id,
        "rivet.node": inst.runtime.node_id,
    }


def actor_span(name: str, inst: ActorInstance, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A :func:`span` about ``inst``: its name, key, id and node as attributes."""
    return _current_span(name, "internal", {**actor_attributes(inst), **attributes})


def producer_span(name: str, inst: ActorInstance, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """An :func:`actor_span` of kind producer: work (a queue message) handed on for later."""
    return _current_span(name, "producer", {**actor_attributes(inst), **attributes})


def start_span(
    name: str, *, parent: Any = None, links: Iterable[Any] = (), kind: Kind = "internal", **attributes: Any
) -> Any:
    """A span that is not made current and that the caller ends (``span.end()``): for work
    that starts in one call and ends in another, such as handling a queue message.

    ``parent`` is a span context (None: the current span's), ``links`` span contexts
    the span refers to without descending from them (a message's sender)."""
    from opentelemetry import trace

    attrs = {k: v for k, v in attributes.items() if v is not None}
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent is not None else None
    return _tracer().start_span(
        name, context=context, kind=_kind(kind), attributes=attrs, links=[trace.Link(link) for link in links]
    )


def end_span(ended: Any, *, error: str | None = None, **attributes: Any) -> None:
    """End a :func:`start_span` span, with last attributes and, for ``error``, the error status."""
    if attributes:
        ended.set_attributes(attributes)
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        ended.set_status(Status(StatusCode.ERROR, error))
    ended.end()


def current_span_context() -> Any:
    """The current span's context, or None when no span is current (a ``run`` loop, a task)."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def make_current(current: Any) -> tuple[Any, Any]:
    """Make ``current`` the current span until :func:`restore` is given what this returns
    (both in the same task): spans begun in between are its children."""
    from opentelemetry import context, trace

    return context.attach(trace.set_span_in_context(current)), current


def restore(made: tuple[Any, Any]) -> None:
    """Undo a :func:`make_current`, unless another span became current since: code that
    made its own current in between (a ``with`` block around the handling) restores the
    context itself, and undoing ours then would bring back a span it already left."""
    from opentelemetry import context, trace

    token, current = made
    if trace.get_current_span() is current:
        context.detach(token)


@contextlib.contextmanager
def within(parent: Any) -> Iterator[None]:
    """Run the block in ``parent``, a context :func:`extract` returned: its spans continue that trace."""
    from opentelemetry import context

    token = context.attach(parent)
    try:
        yield
    finally:
        context.detach(token)


def extract(headers: Mapping[str, str]) -> Any:
    """The context a request's ``traceparent`` carries (attach it with ``opentelemetry.context.attach``)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier={k.lower(): v for k, v in headers.items()})


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current context's ``traceparent`` to outgoing headers."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TraceContextTextMapPropagator().inject(carrier=headers)


def recent_spans(
    actor_id: str, start_ms: int | None, end_ms: int | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """An actor's recent spans as OTLP JSON span objects, and whether ``limit`` cut some."""
    spans, clamped = BUFFER.spans(actor_id, start_ms, end_ms, limit)
    return [_otlp(span) for span in spans], clamped


def _otlp(span: Any) -> dict[str, Any]:
    context = span.get_span_context()
    parent = span.parent
    return {
        "traceId": format(context.trace_id, "032x"),
        "spanId": format(context.span_id, "016x"),
        "parentSpanId": format(parent.span_id, "016x") if parent is not None else "",
        "name": span.name,
        "kind": int(span.kind.value) + 1,  # OTLP numbers kinds from 1 (INTERNAL)
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": [{"key": k, "value": _otlp_value(v)} for k, v in (span.attributes or {}).items()],
        "status": {"code": int(span.status.status_code.value), "message": span.status.description or ""},
        "events": [
            {
                "name": event.name,
                "timeUnixNano": str(event.timestamp),
                "attributes": [{"key": k, "value": _otlp_value(v)} for k, v in (event.attributes or {}).items()],
            }
            for event in span.events
        ],
        "links": [
            {
                "traceId": format(link.context.trace_id, "032x"),
                "spanId": format(link.context.span_id, "016x"),
                "attributes": [{"key": k, "value": _otlp_value(v)} for k, v in (link.attributes or {}).items()],
            }
            for link in span.links
        ],
    }


def _otlp_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_otlp_value(v) for v in value]}}
    return {"stringValue": str(value)}
