import Foundation
import Metrics
import Prometheus
import Testing

@testable import stovepipe

@Suite struct MetricHelpTests {
    /// A help text as the text exposition format writes it: backslash and line feed escaped with a backslash.
    static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// The `# HELP` texts of `exposition`, by family name.
    static func helpTexts(_ exposition: String) -> [String: String] {
        var texts: [String: String] = [:]
        for line in exposition.split(separator: "\n") where line.hasPrefix("# HELP ") {
            let fields = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
            if fields.count == 4 { texts[String(fields[2])] = String(fields[3]) }
        }
        return texts
    }

    /// The metric names in the first cell of each row of the README's metrics table. A cell names a family after
    /// the first by its suffix (`stovepipe_http_connections_total`, `_closed_total`); such a suffix is resolved to
    /// the one name in `known` that a prefix of the cell's first name and the suffix make, or else reported.
    static func readmeMetricNames(known: Set<String>) throws -> (names: Set<String>, unresolved: [String]) {
        let (rows, unresolved) = try readmeMetricRows(known: known)
        return (Set(rows.flatMap(\.names)), unresolved)
    }

    /// The label names the README's metrics table gives each family: in the second cell, each name comes before its
    /// values (`outcome: minted, ...`) or its note in parentheses (`route (template, ...)`), several separated by `;`
    /// when they have values and by `,` when they have none.
    static func readmeMetricLabels(known: Set<String>) throws -> [String: Set<String>] {
        var labels: [String: Set<String>] = [:]
        for row in try readmeMetricRows(known: known).rows {
            var outside = ""
            var depth = 0
            for character in row.labelCell {
                if character == "(" { depth += 1 } else if character == ")" { depth -= 1 } else if depth == 0 { outside.append(character) }
            }
            var names: Set<String> = []
            for part in outside.split(separator: ";") {
                let items = part.contains(":") ? [part.prefix { $0 != ":" }] : part.split(separator: ",")
                for item in items {
                    let name = item.trimmingCharacters(in: .whitespaces)
                    if !name.isEmpty { names.insert(name) }
                }
            }
            for name in row.names { labels[name] = names }
        }
        return labels
    }

    /// The label names of each stovepipe_* family's series in `exposition`, a histogram's `le` left out.
    static func exportedLabels(_ exposition: String) throws -> [String: Set<String>] {
        let families = stovepipeFamilies(exposition)
        var labels: [String: Set<String>] = [:]
        for sample in try PrometheusExposition(exposition).samples where sample.name.hasPrefix("stovepipe_") {
            let family = families.contains(sample.name)
                ? sample.name
                : ["_bucket", "_sum", "_count"].first { sample.name.hasSuffix($0) }.map { String(sample.name.dropLast($0.count)) } ?? sample.name
            labels[family, default: []].formUnion(sample.labels.keys.filter { $0 != "le" })
        }
        return labels
    }

    /// Each row of the README's metrics table: the families its first cell names and its labels cell.
    private static func readmeMetricRows(known: Set<String>) throws -> (rows: [(names: [String], labelCell: String)], unresolved: [String]) {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("README.md")
        let lines = try String(contentsOf: readme, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(where: { $0.hasPrefix("### Metrics (`GET /metrics`") }) else {
            return ([], ["no metrics section in README.md"])
        }
        var rows: [(names: [String], labelCell: String)] = []
        var unresolved: [String] = []
        for line in lines[(start + 1)...].prefix(while: { !$0.hasPrefix("#") }) where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false)
            let cell = cells.dropFirst().first ?? ""
            let tokens = cell.split(separator: "`", omittingEmptySubsequences: false).enumerated()
                .filter { $0.offset % 2 == 1 }.map { String($0.element) }
            guard let first = tokens.first, first.hasPrefix("stovepipe_") else {
                unresolved.append(String(line))
                continue
            }
            var names: [String] = []
            for token in tokens {
                if token.hasPrefix("stovepipe_") {
                    names.append(token)
                    continue
                }
                let candidates = first.indices.filter { first[$0] == "_" }.map { String(first[..<$0]) + token }
                    .filter(known.contains)
                if candidates.count == 1, let name = candidates.first { names.append(name) } else { unresolved.append(token) }
            }
            rows.append((names, cells.count > 2 ? String(cells[2]) : ""))
        }
        return (rows, unresolved)
    }

    /// The README's metrics table is the source of the help texts: the two name the same families.
    @Test func theHelpTableHasATextForEveryFamilyOfTheReadmeAndNoOther() throws {
        let table = Set(MetricHelp.texts.keys)
        let (readme, unresolved) = try Self.readmeMetricNames(known: table)
        #expect(unresolved == [])
        #expect(readme.count >= 32)
        #expect(readme.subtracting(table) == [], "documented, without a help text")
        #expect(table.subtracting(readme) == [], "with a help text, not documented")
    }

    /// One line of printable text each: the registry drops control characters (a line feed included) instead of
    /// escaping them, so a text with one would not read as written.
    @Test func everyHelpTextIsOneLineOfPrintableText() {
        for (name, text) in MetricHelp.texts {
            #expect(DescribedMetricsFactory.metricName(name) == name, "\(name) is not a valid metric name")
            #expect(!text.isEmpty && text.trimmingCharacters(in: .whitespaces) == text, "\(name)")
            #expect(!text.unicodeScalars.contains { $0.properties.generalCategory == .control }, "\(name)")
        }
    }

    /// An in-memory server creates families of the table only, each with its text in one HELP line right before its
    /// TYPE line; the rest need MySQL.
    @Test func anInMemoryServerExportsEachFamilyWithItsTextFromTheTable() throws {
        let server = try RunningServer(arguments: [])
        #expect(try http("GET", "/queues/demo/main", port: server.port).status == 200)
        var metrics = ""
        // The request's counter and histogram are made one after the other once it is answered: wait for both.
        #expect(try eventually {
            metrics = try http("GET", "/metrics", port: server.port).text
            return metrics.contains("# TYPE stovepipe_http_requests_total counter\n")
                && metrics.contains("# TYPE stovepipe_http_request_duration_seconds histogram\n")
        })
        let families = stovepipeFamilies(metrics)
        #expect(families.count >= 14, "\(metrics)")
        #expect(helpLineProblems(metrics) == [])
        let table = Set(MetricHelp.texts.keys)
        #expect(families.subtracting(table) == [], "exported without a help text")
        let mysqlOnly = table.subtracting(families).filter { !$0.hasPrefix("stovepipe_mysql_") && !$0.hasPrefix("stovepipe_topic_") }
        #expect(mysqlOnly == [], "in the table, not exported without MySQL either")
        let help = Self.helpTexts(metrics)
        for family in families { #expect(help[family] == MetricHelp.texts[family].map(Self.escaped), "\(family)") }
        let documented = try Self.readmeMetricLabels(known: table)
        for (family, labels) in try Self.exportedLabels(metrics) {
            #expect(documented[family] == labels, "\(family): README \(documented[family] ?? []), exported \(labels)")
        }
        #expect(server.terminate() == 0)
    }

    /// A backslash in a help text is escaped; a line feed cannot break the HELP line.
    @Test func helpTextsAreEscaped() {
        let registry = PrometheusCollectorRegistry()
        let factory = DescribedMetricsFactory(
            PrometheusMetricsFactory(registry: registry),
            help: ["a_total": #"C:\temp and \n"#, "b_total": "two\nlines", "c_total": #"quote " stays"#])
        for label in ["a_total", "b_total", "c_total"] { Metrics.Counter(label: label, factory: factory).increment() }
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        let lines = String(decoding: buffer, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.contains(#"# HELP a_total C:\\temp and \\n"#))
        #expect(lines.contains(#"# HELP c_total quote " stays"#))
        let b = lines.firstIndex { $0.hasPrefix("# HELP b_total ") }
        #expect(b.map { lines[$0 + 1] } == "# TYPE b_total counter")
        #expect(helpLineProblems(String(decoding: buffer, as: UTF8.self)) == [])
    }

    /// The families are what PrometheusMetricsFactory makes (types, labels, buckets, series at 0), plus HELP lines.
    @Test func theFactoryMakesThePrometheusFactorysFamiliesWithHelp() {
        func configured(_ registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.defaultDurationHistogramBuckets = [.milliseconds(1), .seconds(1)]
            factory.durationHistogramBuckets = ["stovepipe_special_seconds": [.milliseconds(7)]]
            factory.defaultValueHistogramBuckets = [1, 10]
            return factory
        }
        func record(with factory: any MetricsFactory) {
            _ = Metrics.Counter(label: "stovepipe_zero_total", factory: factory)
            for kind in ["a", "b"] { _ = Metrics.Counter(label: "stovepipe_kinds_total", dimensions: [("kind", kind)], factory: factory) }
            Metrics.Counter(label: "stovepipe_kinds_total", dimensions: [("kind", "a")], factory: factory).increment(by: 2)
            Metrics.FloatingPointCounter(label: "stovepipe_float_total", factory: factory).increment(by: 1.5)
            Metrics.Timer(label: "stovepipe_default_seconds", dimensions: [("route", "/x")], factory: factory)
                .recordMilliseconds(3)
            Metrics.Timer(label: "stovepipe_special_seconds", factory: factory).recordMilliseconds(3)
            Metrics.Gauge(label: "stovepipe_gauge", dimensions: [("state", "idle")], factory: factory).record(4)
            Metrics.Recorder(label: "stovepipe_values", factory: factory).record(5)
            Metrics.Meter(label: "stovepipe_meter", factory: factory).set(6)
        }
        let plain = PrometheusCollectorRegistry()
        record(with: configured(plain))
        let described = PrometheusCollectorRegistry()
        let help = ["stovepipe_kinds_total": "Kinds.", "stovepipe_special_seconds": "Special.", "stovepipe_values": "Values."]
        record(with: DescribedMetricsFactory(configured(described), help: help))

        func lines(_ registry: PrometheusCollectorRegistry) -> [Substring] {
            var buffer: [UInt8] = []
            registry.emit(into: &buffer)
            return String(decoding: buffer, as: UTF8.self).split(separator: "\n").sorted()
        }
        let describedLines = lines(described)
        #expect(describedLines.filter { !$0.hasPrefix("# HELP ") } == lines(plain))
        #expect(describedLines.filter { $0.hasPrefix("# HELP ") }.sorted() == [
            "# HELP stovepipe_kinds_total Kinds.", "# HELP stovepipe_special_seconds Special.", "# HELP stovepipe_values Values.",
        ])
    }

    /// The registry traps on one family made with two help texts; labels it would make one name are one name here.
    @Test func labelsTheRegistryMergesGetOneHelpText() {
        #expect(DescribedMetricsFactory.metricName("stovepipe_ok:total9") == "stovepipe_ok:total9")
        #expect(DescribedMetricsFactory.metricName("9stovepipe-odd é") == "_stovepipe_odd__")
        #expect(DescribedMetricsFactory.metricName("") == "_")
        let registry = PrometheusCollectorRegistry()
        let factory = DescribedMetricsFactory(PrometheusMetricsFactory(registry: registry), help: ["stovepipe_odd_total": "Odd."])
        Metrics.Counter(label: "stovepipe-odd_total", factory: factory).increment()
        Metrics.Counter(label: "stovepipe_odd_total", factory: factory).increment()
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        #expect(String(decoding: buffer, as: UTF8.self) == "# HELP stovepipe_odd_total Odd.\n# TYPE stovepipe_odd_total counter\nstovepipe_odd_total 2\n")
    }
}
