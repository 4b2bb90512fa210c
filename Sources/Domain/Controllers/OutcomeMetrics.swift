import Metrics

/// A controller's outcome counter and duration timer, one handle per outcome, made once.
///
/// Making a handle asks the metrics factory (a locked lookup), so the controllers build them at
/// start-up instead of on every call.
struct OutcomeMetrics: Sendable {
    private let handles: [String: (counter: Metrics.Counter, timer: Metrics.Timer)]

    init(counter: String, timer: String, outcomes: [String], factory: any MetricsFactory = MetricsSystem.factory) {
        var handles: [String: (counter: Metrics.Counter, timer: Metrics.Timer)] = [:]
        for outcome in outcomes {
            handles[outcome] = (
                Metrics.Counter(label: counter, dimensions: [("outcome", outcome)], factory: factory),
                Metrics.Timer(label: timer, dimensions: [("outcome", outcome)], factory: factory)
            )
        }
        self.handles = handles
    }

    /// Counts one `outcome` that took `started` until now.
    func record(_ outcome: String, since started: ContinuousClock.Instant) {
        guard let handle = handles[outcome] else { return }
        handle.counter.increment()
        handle.timer.recordNanoseconds((ContinuousClock.now - started).nanoseconds)
    }
}
