import Metrics
import Prometheus

/// The `# HELP` text of every stovepipe_* metric family, by name: the README's metrics table, one line each.
enum MetricHelp {
    /// Help text by family name; the only place a family's description is written in the code.
    static let texts: [String: String] = [
        "stovepipe_http_requests_total": "Requests answered by the API, by route template, method and status.",
        "stovepipe_http_request_duration_seconds": "Handler time of the requests answered by the API, by route template.",
        "stovepipe_http_open_connections": "Open client connections.",
        "stovepipe_http_connections_total": "Client connections accepted.",
        "stovepipe_http_connections_closed_total": "Client connections closed.",
        "stovepipe_http_connections_refused_total": "Connections refused beyond --max-connections (answered 503).",
        "stovepipe_http_requests_shed_total":
            "Requests refused because the worker queue was full, or because they waited in it longer than --queue-timeout (503).",
        "stovepipe_http_accept_failures_total":
            "Failed accepts of new connections (out of descriptors or memory); out of descriptors each is answered 503 through a reserved descriptor, otherwise accepting pauses for a tick.",
        "stovepipe_http_protocol_errors_total": "Malformed or over-limit requests, by parser error.",
        "stovepipe_ingest_total": "Ingest controller calls, by outcome.",
        "stovepipe_ingest_duration_seconds": "Ingest controller time, by outcome.",
        "stovepipe_process_total": "Process controller deliveries, one per delivery, by outcome.",
        "stovepipe_process_duration_seconds": "Process controller time per delivery, by outcome.",
        "stovepipe_process_swept_total":
            "Older requests still accepted that a newer request superseded when it started processing (not by a delivery of their own).",
        "stovepipe_store_operation_duration_seconds": "Time of every store and counter call, by store and operation.",
        "stovepipe_mysql_pool_connections": "Connections of the stores' MySQL pool at scrape time, by state (in_use, idle).",
        "stovepipe_mysql_pool_acquire_wait_seconds": "Time to get a connection from the stores' MySQL pool.",
        "stovepipe_mysql_pool_acquire_timeouts_total": "MySQL pool trouble: waits for a connection that timed out.",
        "stovepipe_mysql_pool_discarded_total": "MySQL pool trouble: connections discarded after an error.",
        "stovepipe_mysql_transaction_retries_total": "MySQL pool trouble: transactions and statements retried on a deadlock or lock wait timeout (1213, 1205).",
        "stovepipe_mysql_errors_total":
            "MySQL errors seen by the pools, by code: failed connects, discarded connections, lock conflicts of transactions and statements (retried or not), acquire timeouts (90001).",
        "stovepipe_topic_published_total": "MySQL topic traffic: messages published, by topic.",
        "stovepipe_topic_delivered_total": "MySQL topic traffic: deliveries to a handler, by topic.",
        "stovepipe_topic_acked_total": "MySQL topic traffic: deliveries acknowledged, by topic.",
        "stovepipe_topic_retried_total": "MySQL topic traffic: deliveries to be retried after a backoff, by topic.",
        "stovepipe_topic_dead_lettered_total": "MySQL topic traffic: messages dead-lettered, by topic.",
        "stovepipe_topic_postponed_total": "MySQL topic traffic: deliveries postponed by their handler, by topic.",
        "stovepipe_topic_redriven_total":
            "MySQL topic traffic: dead letters put back, by topics redrive or by being published again, by topic.",
        "stovepipe_topic_backlog": "MySQL topic state: messages pending and not in flight, by topic.",
        "stovepipe_topic_in_flight": "MySQL topic state: messages delivered and awaiting an outcome, by topic.",
        "stovepipe_topic_dead_letters": "MySQL topic state: dead letters, by topic.",
        "stovepipe_topic_oldest_pending_age_seconds": "MySQL topic state: age of the oldest pending message, by topic.",
        "stovepipe_topic_leases": "MySQL topic state: partitions this replica leases, by topic.",
        "stovepipe_git_housekeeping_total":
            "Housekeeping runs of git mirrors (git gc --auto after a fetch), by result (failed: git failed or timed out).",
        "stovepipe_config_reloads_total":
            "Reloads on SIGHUP, by file (queues, ingest_secret, tls) and result (ok, failed: the configuration in force is kept).",
    ]
}

// Why the help goes in at creation and not into the emitted text: the registry writes a family's HELP line with its
// TYPE line, so a scrape costs nothing more, while inserting lines afterwards would scan and copy every scrape's
// bytes. The registry traps when one name is registered with two help texts; here the help is a function of the
// name the registry keeps (names are made valid before the lookup, so two labels that the registry would merge
// into one family are one name here too), and every family of the registry is made through this factory.
// PrometheusMetricsFactory registers every family with empty help and cannot be given any, so this factory makes
// the families itself, with the same mapping and the base's buckets and sanitizer, and leaves destroying to it.
// The registry escapes a backslash in a help text but drops control characters, a line feed included, so the
// texts of the table are one line each.
/// PrometheusMetricsFactory's families, each made with its `# HELP` text from a table keyed by family name.
struct DescribedMetricsFactory: MetricsFactory {
    /// The factory whose registry, buckets and sanitizer are used.
    let base: PrometheusMetricsFactory
    /// Help text by family name.
    let help: [String: String]

    /// Makes `base`'s families with `help`.
    init(_ base: PrometheusMetricsFactory, help: [String: String] = MetricHelp.texts) {
        self.base = base
        self.help = help
    }

    /// The registry's name for `label`, what `help` is looked up by.
    static func metricName(_ label: String) -> String {
        // The registry replaces every character outside [A-Za-z0-9_:], and a leading digit, by "_"; done here, the
        // registry keeps the name as it is. An empty name would trap in MetricNameDescriptor.
        guard !label.isEmpty else { return "_" }
        var name = ""
        for (index, character) in label.enumerated() {
            let valid = character.isASCII && (character.isLetter || character == "_" || character == ":"
                || (index > 0 && character.isNumber))
            name.append(valid ? character : "_")
        }
        return name
    }

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        let name = Self.metricName(label)
        return MetricNameDescriptor(metricName: name, unitName: "", helpText: help[name] ?? "")
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        let (label, dimensions) = base.nameAndLabelSanitizer(label, dimensions)
        return base.registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        let (label, dimensions) = base.nameAndLabelSanitizer(label, dimensions)
        return base.registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        let (label, dimensions) = base.nameAndLabelSanitizer(label, dimensions)
        guard aggregate else { return base.registry.makeGauge(descriptor: descriptor(label), labels: dimensions) }
        let buckets = base.valueHistogramBuckets[label] ?? base.defaultValueHistogramBuckets
        return base.registry.makeValueHistogram(descriptor: descriptor(label), labels: dimensions, buckets: buckets)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        let (label, dimensions) = base.nameAndLabelSanitizer(label, dimensions)
        return base.registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let (label, dimensions) = base.nameAndLabelSanitizer(label, dimensions)
        let buckets = base.durationHistogramBuckets[label] ?? base.defaultDurationHistogramBuckets
        return base.registry.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions, buckets: buckets)
    }

    func destroyCounter(_ handler: any CounterHandler) { base.destroyCounter(handler) }

    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { base.destroyFloatingPointCounter(handler) }

    func destroyRecorder(_ handler: any RecorderHandler) { base.destroyRecorder(handler) }

    func destroyMeter(_ handler: any MeterHandler) { base.destroyMeter(handler) }

    func destroyTimer(_ handler: any TimerHandler) { base.destroyTimer(handler) }
}
