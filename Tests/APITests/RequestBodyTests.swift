@testable import API
import Domain
import Foundation
import Testing

/// The request bodies written in one pass by `FixedByteWriter` against the field-by-field `JSONWriter`
/// writing they replaced, byte for byte.
@Suite struct RequestBodyTests {
    /// The request fields as they were written through `JSONWriter` before the one-pass writer.
    static func writerFields(_ request: Request, to json: inout JSONWriter, deduplicated: Bool?) {
        json.knownKey("base_uri")
        json.string(request.baseURI?.rawValue ?? "")
        json.knownKey("build_strategy")
        json.string(request.buildStrategy.rawValue)
        json.knownKey("created_at")
        json.date(request.createdAt)
        if let deduplicated {
            json.knownKey("deduplicated")
            json.bool(deduplicated)
        }
        json.knownKey("id")
        json.string(request.id)
        json.knownKey("queue")
        json.string(request.queue.rawValue)
        json.knownKey("state")
        json.string(request.state.rawValue)
        json.knownKey("updated_at")
        json.date(request.updatedAt)
        json.knownKey("uri")
        json.string(request.uri.rawValue)
        json.knownKey("version")
        json.integer(request.version)
    }

    static func writerObject(_ request: Request, deduplicated: Bool?) -> [UInt8] {
        var json = JSONWriter()
        json.beginObject()
        writerFields(request, to: &json, deduplicated: deduplicated)
        json.endObject()
        return json.bytes
    }

    static let texts = JSONWriterTests.awkwardTexts + [
        String(repeating: "x", count: 300), String(repeating: "\"", count: 40), "https://example.com/" + String(repeating: "é", count: 200),
    ]

    static let dates: [Date] = [
        0, 1, 59, 86_399, 86_400, 951_782_400.5, 1_795_950_715.999_9, 4_107_542_399, 4_107_542_400,
        253_402_300_799.75, 253_402_300_800, 1e12, -0.25, -1, -86_401.5, -2_208_988_800, -62_135_596_800,
        .nan, .infinity, -.infinity,
    ].map { Date(timeIntervalSince1970: $0) }

    static let queues = ["q", "monorepo/main", "A-Z.a_z/0-9/..x/" + String(repeating: "n", count: 150)]

    static func requests() throws -> [Request] {
        var requests: [Request] = []
        let numbers: [UInt64] = [1, 9, 10, 12_345, UInt64.max]
        let versions: [UInt64] = [0, 1, 99, 100, UInt64.max]
        for (index, text) in texts.enumerated() {
            let queue = try QueueName(queues[index % queues.count])
            let strategy = BuildStrategy.allCases[index % BuildStrategy.allCases.count]
            let state = RequestState.allCases[index % RequestState.allCases.count]
            for (dateIndex, date) in dates.enumerated() {
                requests.append(Request(
                    id: RequestID(queue: queue, number: numbers[dateIndex % numbers.count]), uri: SourceURI(text),
                    state: state, buildStrategy: strategy,
                    baseURI: dateIndex.isMultiple(of: 3) ? nil : SourceURI(texts[(index + dateIndex) % texts.count]),
                    version: versions[(index + dateIndex) % versions.count],
                    createdAt: date, updatedAt: dates[(dateIndex + index + 1) % dates.count]))
            }
        }
        return requests
    }

    @Test func requestBodiesAreTheJSONWriterBytes() throws {
        for request in try Self.requests() {
            #expect(request.jsonBytes == Self.writerObject(request, deduplicated: nil))
            for deduplicated in [false, true] {
                #expect(IngestBody(request: request, deduplicated: deduplicated).jsonBytes
                    == Self.writerObject(request, deduplicated: deduplicated))
            }
        }
    }

    @Test func pagesAreTheJSONWriterBytes() throws {
        let requests = try Self.requests()
        for count in [0, 1, 2, 7] {
            for cursor in [nil, "djEgcSA1"] {
                let shown = Array(requests.prefix(count))
                var json = JSONWriter()
                json.beginObject()
                if let cursor {
                    json.knownKey("next_cursor")
                    json.string(cursor)
                }
                json.knownKey("requests")
                json.beginArray()
                for request in shown {
                    json.beginObject()
                    Self.writerFields(request, to: &json, deduplicated: nil)
                    json.endObject()
                }
                json.endArray()
                json.endObject()
                #expect(RequestPage(requests: shown, nextCursor: cursor).jsonBytes == json.bytes)
            }
        }
    }

    @Test func wireNamesNeedNoEscaping() throws {
        // The one-pass writer copies these without escaping.
        for name in BuildStrategy.allCases.map(\.rawValue) + RequestState.allCases.map(\.rawValue) + Self.queues {
            var json = JSONWriter()
            json.string(name)
            #expect(json.bytes == Array("\"\(name)\"".utf8))
        }
    }

    @Test(arguments: [0, 1, 5, 19, 20, 21, 40])
    func aCursorTooSmallWritesAgainWithWhatItNeeded(_ capacity: Int) {
        let date = Date(timeIntervalSince1970: 1_795_950_715)
        let bytes = FixedByteWriter.bytes(capacity: capacity) { cursor in
            cursor.write(UInt8(ascii: "a"))
            cursor.writeEscaped("\"b\\\"c\n")
            cursor.writeTimestamp(date)
            cursor.write("|")
            cursor.writeTimestamp(Date(timeIntervalSince1970: -62_198_755_200))
            cursor.write("|")
            cursor.writeDecimal(UInt64.max)
        }
        var old: [UInt8] = [UInt8(ascii: "a")]
        JSONWriter.appendEscaped("\"b\\\"c\n", to: &old)
        RFC3339.append(date, fractionDigits: 0, to: &old)
        old.append(UInt8(ascii: "|"))
        RFC3339.append(Date(timeIntervalSince1970: -62_198_755_200), fractionDigits: 0, to: &old)
        old.append(contentsOf: Array("|18446744073709551615".utf8))
        #expect(bytes == old)
    }

    @Test func decimalLengthsAreTheDigitCounts() {
        var value: UInt64 = 1
        for digits in 1...19 {
            #expect(FixedByteWriter.decimalLength(value - 1) == max(1, digits - 1))
            #expect(FixedByteWriter.decimalLength(value) == digits)
            value *= 10
        }
        #expect(FixedByteWriter.decimalLength(UInt64.max) == 20)
    }

    /// RFC 3339 through `gmtime_r` and the truncating fraction arithmetic, as the formatter wrote it before
    /// it had a calendar of its own.
    static func referenceRFC3339(_ date: Date, fractionDigits: Int) -> String {
        let interval = date.timeIntervalSince1970
        let wholeSeconds = interval.rounded(.down)
        var seconds = time_t(Int64(exactly: wholeSeconds) ?? 0)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var text = String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
            Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
        if fractionDigits > 0 {
            var scale = 1
            for _ in 0..<fractionDigits { scale *= 10 }
            let scaled = ((interval - wholeSeconds) * Double(scale)).rounded(.down)
            let fraction = min(max(Int(scaled), 0), scale - 1)
            let digits = String(fraction)
            text += "." + String(repeating: "0", count: fractionDigits - digits.count) + digits
        }
        return text + "Z"
    }

    @Test func rfc3339AgreesWithGmtimeForManyInstantsAndFractions() {
        var checked = 0
        var generator = SplitMix(seed: 0x5157_0E91)
        var instants: [Double] = [
            0, 0.5, 0.999_999, 59.999, 86_399.999, 68_169_600, 68_256_000, 951_868_799, 951_868_800, 978_307_199.9,
            978_307_200, 4_107_542_399, 4_107_542_400, 13_574_563_200, 253_402_300_799.999,
        ]
        // Year boundaries and the days around the end of February, every year from 1970 to 9999 in steps.
        for year in stride(from: 1970, through: 9999, by: 7) {
            var parts = tm()
            parts.tm_year = Int32(year - 1900)
            parts.tm_mday = 1
            let newYear = Double(timegm(&parts))
            instants += [newYear - 1, newYear, newYear + 86_400 * 59 - 1, newYear + 86_400 * 59, newYear + 86_400 * 60]
        }
        for _ in 0..<20_000 {
            instants.append(Double(generator.next() % 253_402_300_800_000) / 1_000)
        }
        for instant in instants {
            let date = Date(timeIntervalSince1970: instant)
            for digits in 0...6 {
                let expected = Self.referenceRFC3339(date, fractionDigits: digits)
                let actual = RFC3339.string(date, fractionDigits: digits)
                if actual != expected {
                    Issue.record("\(instant), \(digits) digits: \(actual) is not \(expected)")
                    return
                }
                checked += 1
            }
        }
        #expect(checked > 150_000)
    }
}

/// A small seeded generator, so that the sampled instants are the same on every run.
struct SplitMix {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}
