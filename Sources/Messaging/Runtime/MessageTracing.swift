import Instrumentation
import ServiceContextModule
import Tracing

/// Trace context through messages with swift-distributed-tracing. Each handler runs in a span
/// whose parent is extracted from the message's `traceparent`/`tracestate` headers, and the
/// messages it sends carry the headers the installed instrument injects. With no tracer installed
/// (the default), the runtime's own W3C propagation applies: same trace id, a new parent id per
/// message (``Envelope/child(type:body:)``), so logs still correlate by `trace_id`.
enum MessageTracing {
    struct HeaderExtractor: Extractor {
        func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
    }

    struct HeaderInjector: Injector {
        func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
    }

    /// The context the message carries, as the installed instrument reads it.
    static func context(for envelope: Envelope) -> ServiceContext {
        var carrier: [String: String] = [:]
        if let traceparent = envelope.traceparent { carrier[Envelope.Header.traceparent] = traceparent }
        if let tracestate = envelope.tracestate { carrier[Envelope.Header.tracestate] = tracestate }
        var context = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(carrier, into: &context, using: HeaderExtractor())
        return context
    }

    /// Trace headers for a message sent now, from the current span; empty when no instrument is installed.
    static func outgoingHeaders() -> [String: String] {
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(ServiceContext.current ?? .topLevel, into: &carrier, using: HeaderInjector())
        return carrier
    }
}
