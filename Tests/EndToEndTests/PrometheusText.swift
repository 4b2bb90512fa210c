import Foundation

/// One sample line of a Prometheus text exposition (format 0.0.4): `name{label="value",...} value [timestamp]`.
struct PrometheusSample: Equatable {
    let name: String
    let labels: [String: String]
    let value: Double
}

/// The samples of a Prometheus text exposition, parsed line by line; `# HELP`/`# TYPE` and blank lines skipped.
struct PrometheusExposition {
    let samples: [PrometheusSample]

    enum ParseError: Error, CustomStringConvertible {
        case malformed(line: String)

        var description: String {
            switch self {
            case .malformed(let line): "malformed exposition line: \(line)"
            }
        }
    }

    init(_ text: String) throws {
        var samples: [PrometheusSample] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("#") || line.allSatisfy(\.isWhitespace) { continue }
            guard let sample = Self.parse(Array(line.utf8)) else { throw ParseError.malformed(line: String(line)) }
            samples.append(sample)
        }
        self.samples = samples
    }

    /// The value of the sample named `name` whose label set is exactly `labels`; nil when there is none.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    /// Every sample named `name`, whatever its labels.
    func samples(named name: String) -> [PrometheusSample] {
        samples.filter { $0.name == name }
    }

    private static func parse(_ bytes: [UInt8]) -> PrometheusSample? {
        var index = 0
        func isNameByte(_ byte: UInt8, first: Bool) -> Bool {
            let letter = (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122) || byte == 95 || byte == 58
            return letter || (!first && byte >= 48 && byte <= 57)
        }
        func readName() -> String? {
            let start = index
            while index < bytes.count, isNameByte(bytes[index], first: index == start) { index += 1 }
            return index > start ? String(decoding: bytes[start..<index], as: UTF8.self) : nil
        }
        func skipSpaces() {
            while index < bytes.count, bytes[index] == 32 || bytes[index] == 9 { index += 1 }
        }
        guard let name = readName() else { return nil }
        var labels: [String: String] = [:]
        if index < bytes.count, bytes[index] == UInt8(ascii: "{") {
            index += 1
            while true {
                skipSpaces()
                guard index < bytes.count else { return nil }
                if bytes[index] == UInt8(ascii: "}") {
                    index += 1
                    break
                }
                guard let label = readName(), index < bytes.count, bytes[index] == UInt8(ascii: "="),
                    index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "\"")
                else { return nil }
                index += 2
                // Label values escape backslash, double quote and line feed with a backslash.
                var value: [UInt8] = []
                var closed = false
                while index < bytes.count {
                    let byte = bytes[index]
                    index += 1
                    if byte == UInt8(ascii: "\"") {
                        closed = true
                        break
                    }
                    if byte == UInt8(ascii: "\\") {
                        guard index < bytes.count else { return nil }
                        let escaped = bytes[index]
                        index += 1
                        value.append(escaped == UInt8(ascii: "n") ? 10 : escaped)
                    } else {
                        value.append(byte)
                    }
                }
                guard closed, labels[label] == nil else { return nil }
                labels[label] = String(decoding: value, as: UTF8.self)
                skipSpaces()
                if index < bytes.count, bytes[index] == UInt8(ascii: ",") { index += 1 }
            }
        }
        skipSpaces()
        let fields = String(decoding: bytes[index...], as: UTF8.self).split(separator: " ")
        guard fields.count == 1 || fields.count == 2, let value = parseValue(fields[0]) else { return nil }
        if fields.count == 2, Int64(fields[1]) == nil { return nil }
        return PrometheusSample(name: name, labels: labels, value: value)
    }

    private static func parseValue(_ text: Substring) -> Double? {
        switch text {
        case "+Inf": .infinity
        case "-Inf": -.infinity
        case "NaN": .nan
        default: Double(text)
        }
    }
}

/// The names of the stovepipe_* families in a Prometheus text exposition, from their `# TYPE` lines.
func stovepipeFamilies(_ exposition: String) -> Set<String> {
    Set(exposition.split(separator: "\n").compactMap { line in
        line.hasPrefix("# TYPE stovepipe_") ? line.split(separator: " ").dropFirst(2).first.map(String.init) : nil
    })
}

/// What is wrong with the `# HELP` lines of the stovepipe_* families in `exposition`: each family's `# TYPE` line
/// must follow a `# HELP` line of the same name with a text, and the family must have no other `# HELP` line.
func helpLineProblems(_ exposition: String) -> [String] {
    let lines = exposition.split(separator: "\n")
    var helpLines: [String: Int] = [:]
    for line in lines where line.hasPrefix("# HELP ") {
        if let name = line.split(separator: " ").dropFirst(2).first { helpLines[String(name), default: 0] += 1 }
    }
    var problems: [String] = []
    for (index, line) in lines.enumerated() where line.hasPrefix("# TYPE stovepipe_") {
        guard let name = line.split(separator: " ").dropFirst(2).first else { continue }
        let help = "# HELP \(name) "
        let previous = index > 0 ? lines[index - 1] : ""
        if !previous.hasPrefix(help) || previous.count == help.count {
            problems.append("no HELP line with a text right before \(line)")
        }
        if let count = helpLines[String(name)], count != 1 { problems.append("\(count) HELP lines for \(name)") }
    }
    return problems
}
